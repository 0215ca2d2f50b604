"""Helpers shared by the subcommands: connecting from the global flags, the errors a command
reports in one line, and printing results (JSON, aligned tables, sizes, timestamps)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any

from agts._engine import StorageEngine, connect
from agts.config import LOCAL_USER, StorageConfig
from agts.errors import ConfigError, ConnectError, StorageError, ValidationError

log = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure a command reports as one line ``agts: error: <message>``, with ``exit_code``.

    For what the command itself finds wrong (a file it cannot read or write, a database without
    agts' schema); errors from the library are :class:`agts.StorageError`.
    """

    exit_code = 1


class UsageError(CommandError):
    """The command line (or the settings it names) cannot be carried out as written: exit 2."""

    exit_code = 2


@contextmanager
def usage_errors(flag: str | None = None) -> Iterator[None]:
    """Turn :class:`ConfigError` / :class:`ValidationError` raised in the block into a
    :class:`UsageError` (exit 2), its message prefixed with ``flag`` if given: for blocks whose
    only input is the command line (or the settings it names)."""
    try:
        yield
    except (ConfigError, ValidationError) as exc:
        raise UsageError(f"{flag}: {exc}" if flag else str(exc)) from exc


def one_line(text: object) -> str:
    """``text`` on one line: its lines stripped and joined (a message must not span lines)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def warn(message: str) -> None:
    """A note on stderr that does not change the exit code: ``agts: warning: <message>``."""
    print(f"agts: warning: {one_line(message)}", file=sys.stderr)


def config_from_args(args: argparse.Namespace) -> StorageConfig:
    """The settings from ``--dsn`` / ``--config`` / the environment / the local default.

    A connection string to the local default cluster (``agts local``) without a password gets
    the cluster's generated one, as the default configuration does.

    Raises
    ------
    UsageError
        An invalid ``--dsn``, ``--config`` file or ``AGTS_*`` variable.
    """
    with usage_errors():
        if getattr(args, "dsn", None):
            config = StorageConfig.from_dsn(args.dsn)
        elif getattr(args, "config", None):
            config = StorageConfig.load(args.config)
        else:
            config = StorageConfig.load()
        return _with_local_password(config)


def _local_target(config: StorageConfig) -> dict[str, Any] | None:
    """The connection parameters when they name the local default cluster (``agts local``),
    else None."""
    from psycopg.conninfo import conninfo_to_dict

    from agts.db._local import local_port

    db = config.database
    params: dict[str, Any] = {"host": db.host, "port": db.port, "user": db.user}
    if db.dsn:
        try:
            params.update(conninfo_to_dict(db.dsn))
        except Exception:
            return None  # connect() reports the invalid connection string
    local = (params.get("host") in {"127.0.0.1", "localhost", "::1"}
             and str(params.get("port", "")) == str(local_port()))
    return params if local else None


def _with_local_password(config: StorageConfig) -> StorageConfig:
    """A connection string to the local cluster, as user agts and without a password, gets the
    cluster's generated password (the default configuration, without a DSN, does it already)."""
    import os

    from agts.db._local import local_password

    if not config.database.dsn or config.database.password is not None:
        return config
    params = _local_target(config)
    if (params is None or "password" in params or params.get("user") != LOCAL_USER
            or config.database.password_file or os.environ.get("PGPASSWORD")):
        return config
    password = local_password()
    if password is None:
        return config
    return config.with_overrides(database={"password": password})


def engine_from_args(args: argparse.Namespace) -> StorageEngine:
    """Connect using ``--dsn`` / ``--config`` / the environment / the local default.

    Raises
    ------
    UsageError
        Invalid settings.
    ConnectError
        The database cannot be reached or refused the login; for the local default cluster the
        message says where its password is.
    """
    config = config_from_args(args)
    try:
        with usage_errors():  # connect() checks the connection string and password file first
            return connect(config)
    except ConnectError as exc:
        text = str(exc)
        if _local_target(config) is not None and ("password" in text or "authentication" in text):
            from agts.db._local import local_dir

            raise ConnectError(
                f"{text}; the local cluster's password for user {LOCAL_USER!r} is in "
                f"{str(local_dir() / 'password')!r} (agts reads it when the connection string "
                "names no password)", transient=exc.transient) from exc
        raise


def schema_version(engine: StorageEngine) -> int:
    """The highest applied agts migration, 0 when the schema was never created (read-only)."""
    with engine.db.connection() as conn:
        row = conn.execute("SELECT to_regclass('agts.schema_migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM agts.schema_migrations").fetchone()
    return int(row[0]) if row else 0


def missing_schema(engine: StorageEngine) -> str | None:
    """Why the database cannot serve agts' commands yet, or None when it can."""
    if engine.server.timescaledb_installed and schema_version(engine) > 0:
        return None
    what = ("has neither the TimescaleDB extension nor agts' schema"
            if not engine.server.timescaledb_installed else "has no agts schema")
    return f"database {engine.server.database!r} {what}: run 'agts migrate up' to create it"


def require_schema(engine: StorageEngine) -> None:
    """Raise :class:`CommandError` unless TimescaleDB and agts' schema are in the database."""
    problem = missing_schema(engine)
    if problem:
        raise CommandError(problem)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """``--every`` values: a positive whole number with a unit s, m, h or d, in seconds."""
    text = text.strip()
    unit = text[-1:]
    if unit not in _UNITS or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"interval must be a positive number with a unit s, m, h or d, got {text!r}")
    return int(text[:-1]) * _UNITS[unit]


def positive_int(text: str) -> int:
    """Option values that must be whole numbers above zero (``--limit``, ``--growth-days``)."""
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def repeat(every: float | None, step: Callable[[], None], *, what: str) -> int:
    """Run ``step`` once, or every ``every`` seconds until SIGTERM/SIGINT (exit code 0).

    In a repeating service a transient error (the database restarting, a lost connection) is
    logged and the next round tries again; a terminal one ends the service with its error.
    """
    if not every:
        step()
        return 0
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                step()
            except StorageError as exc:
                if not exc.transient:
                    raise
                log.warning("%s failed, trying again in %gs: %s", what, every, exc)
            if stop.wait(every):
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def print_json(data: Any) -> None:
    def default(value: Any) -> Any:
        if isinstance(value, datetime | date):
            return value.isoformat()
        if hasattr(value, "__dataclass_fields__"):
            return {k: getattr(value, k) for k in value.__dataclass_fields__}
        return str(value)

    print(json.dumps(data, default=default, indent=2, sort_keys=True))


def iso(value: datetime | None) -> str:
    """A timestamp as agts' data outputs write it: ISO 8601 with offset and microseconds."""
    return "-" if value is None else value.isoformat(timespec="microseconds")


def human_size(n: int | float | None) -> str:
    """``1536`` → ``'1.5 kB'`` (powers of 1024); ``None`` → ``'-'``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *,
                left: int = 1, indent: str = "") -> None:
    """Aligned columns under a one-line header; the first ``left`` columns are left-aligned,
    the others (numbers, sizes) right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        parts = [cell.ljust(w) if i < left else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        print((indent + "  ".join(parts)).rstrip())
