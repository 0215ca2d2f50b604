"""``agts migrate up|down|status``: the schema migrations."""

from __future__ import annotations

import argparse
from typing import Any

from agts._migrations import MigrationRunner
from agts.cli._common import add_json_flag, engine_from_args, print_json


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "migrate", help="apply, roll back or list schema migrations",
        description="Apply pending migrations (up), roll back (down: one step, or to --to), or "
                    "list them (status). Edition-specific parts are skipped, with a note, where "
                    "the server's TimescaleDB edition lacks them.",
        epilog="Examples:\n  agts migrate up\n  agts migrate down --to 0\n  agts migrate status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["up", "down", "status"], nargs="?", default="up")
    parser.add_argument("--to", type=int, metavar="VERSION", help="target version")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        runner = MigrationRunner(engine.db)
        if args.action == "status":
            states = runner.status()
            if args.json:
                print_json(states)
            else:
                for s in states:
                    mark = "applied" if s.applied else "pending"
                    if s.checksum_ok is False:
                        mark = "EDITED AFTER APPLY"
                    extra = " (+community)" if s.community else ""
                    print(f"{s.version:04d}_{s.name:<30} {mark}{extra}")
            return 1 if any(s.checksum_ok is False for s in states) else 0
        steps = runner.up(args.to) if args.action == "up" else runner.down(args.to)
        if args.json:
            print_json(steps)
        else:
            if not steps:
                print(f"nothing to do: schema at version {runner.current_version()}")
            for step in steps:
                print(f"{step.direction:>4} {step.version:04d}_{step.name} ({step.duration_ms:.0f} ms)")
                for note in step.skipped:
                    print(f"     skipped {note}")
    return 0
