"""The ``agts`` command. Each subcommand lives in its own module under :mod:`agts.cli`.

The command never prints a traceback (unless asked with ``-v``): every failure is one line on
stderr, ``agts: error: <message>``, and the exit code says what kind of failure it was.

Exit codes
----------
0
    Success. A query that matched nothing also exits 0; a warning on stderr says why (no such
    metric, label value or group-by key).
1
    The work failed: the database refused a statement, the database has no agts schema yet, a
    file is missing, unreadable or holds invalid data (``agts ingest --on-error raise``), an
    output file cannot be written. Also any unexpected error (``agts: error: <type>: <message>``;
    ``-v`` shows the traceback).
2
    Usage: an unknown command, option or choice, a malformed or contradictory argument
    (``--bucket 1hour``, ``--agg p101``, ``--start`` after ``--end``, ``--agg`` without
    ``--bucket``), or invalid settings (``--dsn``, ``--config``, ``AGTS_*`` variables). The rule:
    whatever part of agts finds the mistake (argparse, the configuration, the library's argument
    checks), a :class:`~agts.ConfigError` or :class:`~agts.ValidationError` raised because of a
    command-line argument or a setting is a usage error. Commands check their arguments before
    any work, so exit 2 means nothing was done. A ``ValidationError`` about the *data* of a file
    being ingested is not a usage error: exit 1.
3
    The database cannot be reached or refused the login.
130
    Interrupted (Ctrl-C).
141
    Whoever read stdout stopped early (``agts query ... --json | head -1``): the output stops
    quietly, with the code a process killed by SIGPIPE reports in a shell (128 + 13).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from agts import __version__
from agts.cli._common import CommandError, one_line
from agts.errors import ConnectError, StorageError, redact, translate

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

EXIT_CODES = ("Exit codes: 0 ok (also an empty result: a warning says why), 1 the work failed "
              "(database, files, data), 2 usage error (arguments, --dsn, --config, AGTS_* "
              "settings: checked before any work), 3 database unreachable, 130 interrupted, "
              "141 stdout closed early (| head).")

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
    "agts.cli._discovery",
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
               + _wrapped(EXIT_CODES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML config file (default: $AGTS_CONFIG "
                        "or ./agts.yaml, else the local default database)")
    parser.add_argument("--dsn", help="connection string; overrides the config's database section "
                        "(prefer $AGTS_DSN: a password on the command line is visible to others)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (and the traceback of an unexpected error)")
    parser.add_argument("--version", action="version", version=f"agts {__version__}")
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
    parser.epilog = f"{parser.epilog or ''}\n\n{_wrapped(EXIT_CODES)}".lstrip("\n")
    known = {option for action in parser._actions for option in action.option_strings}
    group = parser.add_argument_group("connection (also accepted before the command)")
    if "--config" not in known:
        group.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                           help="YAML config file (default: $AGTS_CONFIG or ./agts.yaml)")
    if "--dsn" not in known:
        group.add_argument("--dsn", default=argparse.SUPPRESS,
                           help="connection string (prefer $AGTS_DSN: command lines are visible)")


def _wrapped(text: str) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width=96))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    verbose, command = 0, "agts"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        verbose = args.verbose
        command = " ".join(str(word) for word in ("agts", args.command, getattr(args, "action", ""))
                           if word)
        level = logging.WARNING - 10 * min(verbose, 2)
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("agts: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except CommandError as exc:
        return _fail(exc, exc.exit_code)
    except ConnectError as exc:
        return _fail(exc, EXIT_UNREACHABLE)
    except StorageError as exc:
        return _fail(exc, EXIT_ERROR)
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.Error):  # a driver error the library did not translate
            err = translate(exc, action=command)
            return _fail(err, EXIT_UNREACHABLE if isinstance(err, ConnectError) else EXIT_ERROR)
        # The last resort: one line, the traceback only on request.
        if verbose:
            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
        hint = "" if verbose else " (run with -v for details)"
        print(f"agts: error: {type(exc).__name__}: {one_line(redact(str(exc)))}{hint}",
              file=sys.stderr)
        return EXIT_ERROR


def _fail(exc: BaseException, code: int) -> int:
    message = one_line(exc)
    if getattr(exc, "sqlstate", None) in {"42P01", "42883"}:  # undefined table or function
        message += "; is the schema up to date? see 'agts migrate status'"
    print(f"agts: error: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (embedded use)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
