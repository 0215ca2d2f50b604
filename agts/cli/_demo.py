"""``agts demo``: the main job, end to end on the configured (or local default) database."""

from __future__ import annotations

import argparse
from typing import Any

from agts.cli import _status
from agts.cli._common import add_json_flag, engine_from_args, print_json


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="run the main job end to end and print a summary",
        epilog="Examples:\n  agts demo\n  agts demo --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        steps = engine.migrate()
        report = _status.collect(engine)
    if args.json:
        print_json({"migrations_applied": [s.version for s in steps], "status": report})
        return 0
    print(f"migrations applied: {len(steps)}")
    return _status.run(args)
