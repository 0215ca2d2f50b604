"""The ``agts`` command. Each subcommand lives in its own module under :mod:`agts.cli`.

Exit codes: 0 success, 1 a storage error (the message says which), 2 bad usage,
3 the database could not be reached.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agts.errors import ConnectError, StorageError

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# Modules that add subcommands; each has register(subparsers) and sets func=handler(args) -> int.
_COMMANDS = [
    "agts.cli._local",
    "agts.cli._migrate",
    "agts.cli._status",
    "agts.cli._demo",
    "agts.cli._roles",
    "agts.cli._archive",
    "agts.cli._retention",
    "agts.cli._rollups",
    "agts.cli._ingest",
    "agts.cli._query",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="agts",
        description="Trading-bot time series in TimescaleDB, returned as Polars DataFrames.",
        epilog="Examples:\n  agts local start\n  agts migrate up\n  agts demo\n  agts status --json\n"
               "  agts ingest metrics.parquet --into metrics\n"
               "  agts query latency_ms --start 2026-01-02 --end 2026-01-03 --bucket 1h --agg p99\n\n"
               "Exit codes: 0 ok, 1 storage error, 2 usage error, 3 database unreachable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file (default: $AGTS_CONFIG "
                        "or ./agts.yaml, else the local default database)")
    parser.add_argument("--dsn", help="connection string; overrides the config's database section "
                        "(prefer $AGTS_DSN: a password on the command line is visible to others)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(name).register(sub)
    _add_connection_flags(parser, top=True)
    return parser


def _add_connection_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """Accept ``--config``/``--dsn`` after the subcommand too (``agts status --dsn ...``).

    Added to every leaf parser with a suppressed default, so a flag given before the subcommand
    is kept when the leaf does not repeat it.
    """
    children = [action for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)]
    for action in children:
        for child in dict.fromkeys(action.choices.values()):
            if child.epilog is None:  # subcommands of a command show the command's examples
                child.epilog, child.formatter_class = parser.epilog, parser.formatter_class
            _add_connection_flags(child)
    if top or children:
        return
    known = {option for action in parser._actions for option in action.option_strings}
    group = parser.add_argument_group("connection (also accepted before the command)")
    if "--config" not in known:
        group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                           help="YAML config file (default: $AGTS_CONFIG or ./agts.yaml)")
    if "--dsn" not in known:
        group.add_argument("--dsn", default=argparse.SUPPRESS,
                           help="connection string (prefer $AGTS_DSN: command lines are visible)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ConnectError as exc:
        print(f"agts: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except StorageError as exc:
        print(f"agts: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("agts: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
