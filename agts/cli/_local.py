"""``agts local start|stop|status``: the local default TimescaleDB cluster."""

from __future__ import annotations

import argparse
from typing import Any

from agts.cli._common import add_json_flag, print_json
from agts.db import _local


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "local", help="run the local default TimescaleDB (no Docker needed)",
        description="Install TimescaleDB if missing (Debian/Ubuntu, builds Debian's source "
                    "package), initialize and start a private cluster on 127.0.0.1:55432, or stop it.",
        epilog="Examples:\n  agts local start\n  agts local status --json\n  agts local stop",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--no-install", action="store_true",
                        help="fail instead of building TimescaleDB when it is missing")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "start":
        state = _local.start(install=not args.no_install)
    elif args.action == "stop":
        state = _local.stop()
    else:
        state = _local.status()
    if args.json:
        print_json(state)
    else:
        print(state.describe())
    if args.action == "status" and not state.running:
        return 1
    return 0
