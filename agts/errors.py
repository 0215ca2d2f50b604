"""The errors agts raises.

Every error is a :class:`StorageError`. Driver exceptions (psycopg, ADBC) are translated at one
boundary, :func:`translate`, by SQLSTATE; the original stays available as ``__cause__``.
``transient`` tells a caller whether retrying the same call can succeed (connection lost,
serialization failure, lock timeout) or not (bad input, constraint violation, missing privilege).

Messages never contain passwords: DSNs are redacted before they are put into a message.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ArchiveError",
    "BackpressureError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "ConstraintError",
    "EditionError",
    "MigrationError",
    "QueryError",
    "ResultTooLargeError",
    "SpoolFullError",
    "StorageError",
    "ValidationError",
    "redact",
    "translate",
]


class StorageError(Exception):
    """Base class of every agts error.

    Attributes
    ----------
    transient : bool
        True when the same call may succeed if retried later (the database was unreachable, a
        connection was lost, a serialization failure or a timeout). False for errors that retrying
        cannot fix.
    sqlstate : str or None
        The PostgreSQL SQLSTATE the error was translated from, if any.
    """

    transient: bool = False

    def __init__(self, message: str, *, transient: bool | None = None, sqlstate: str | None = None):
        super().__init__(redact(message))
        if transient is not None:
            self.transient = transient
        self.sqlstate = sqlstate


class ConfigError(StorageError):
    """The configuration is invalid: names the key, the value and what is allowed."""


class ConnectError(StorageError):
    """The database could not be reached or refused the connection."""

    transient = True


class MigrationError(StorageError):
    """A schema migration could not be applied, rolled back or verified."""


class ValidationError(StorageError, ValueError):
    """Input data was rejected before it reached the database.

    Attributes
    ----------
    column : str or None
        The offending column.
    row : int or None
        Index of the first offending row in the input.
    """

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None):
        super().__init__(message)
        self.column = column
        self.row = row


class ConstraintError(StorageError):
    """The database rejected data that breaks a constraint (unique, foreign key, check, not null).

    Attributes
    ----------
    constraint : str or None
        The constraint's name, as the database reported it.
    """

    def __init__(
        self, message: str, *, constraint: str | None = None, sqlstate: str | None = None
    ) -> None:
        super().__init__(message, sqlstate=sqlstate)
        self.constraint = constraint


class ConflictError(ConstraintError):
    """A record with the same id exists with a different payload."""


class QueryError(StorageError):
    """A query failed on the server or was malformed."""


class ResultTooLargeError(QueryError):
    """A query would return more rows than ``query.max_results`` allows."""


class EditionError(StorageError):
    """The feature needs another TimescaleDB edition; the message names the alternative."""


class ArchiveError(StorageError):
    """A file or root of the cold tier is missing, unreadable, damaged, full or not what its
    manifest says; the message names the file (or root) and what is wrong.

    Attributes
    ----------
    path : str or None
        The file or root concerned.
    """

    def __init__(self, message: str, *, path: str | None = None, transient: bool | None = None):
        super().__init__(message, transient=transient)
        self.path = path


class BackpressureError(StorageError):
    """The ingest buffer is full and the backpressure policy is ``"raise"`` (or a wait timed out)."""

    transient = True


class SpoolFullError(StorageError):
    """The local outage spool reached its size cap; the batch was not accepted."""

    transient = True


_PASSWORD_PATTERNS = [
    # key=value conninfo: password=secret or password='se cret'
    (re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE), r"\1***"),
    # URI userinfo: postgresql://user:secret@host
    # (the scheme is bounded: an unbounded one made this quadratic on long messages, e.g. an
    # error quoting a 100 kB label value took minutes)
    (re.compile(r"([a-z][a-z0-9+.-]{0,31}://[^:/@\s]*:)([^@\s]*)(@)", re.IGNORECASE), r"\1***\3"),
]


def redact(text: str) -> str:
    """Return ``text`` with passwords in DSNs and conninfo strings replaced by ``***``."""
    for pattern, repl in _PASSWORD_PATTERNS:
        text = pattern.sub(repl, text)
    return text


# SQLSTATE classes: https://www.postgresql.org/docs/current/errcodes-appendix.html
_TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement timeout)
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
    "53400",  # configuration_limit_exceeded
}


# The server ended the session (terminated backend, shutdown, still starting): the connection is
# gone, so the caller sees the same ConnectError as for a refused connection.
_SHUTDOWN_STATES = {"57P01", "57P02", "57P03"}

_SERVER_LINE = re.compile(r"\b(?:ERROR|FATAL|PANIC):\s+(.*)")


def _detail_of(exc: BaseException) -> str:
    """The line of a driver message that says why: ADBC messages start with the statement it
    ran (``Failed to execute query '...``) and carry the server's ``ERROR:`` line further down."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    server = _SERVER_LINE.search(text)
    if server and server.group(1).strip() and server.group(0) not in first:
        return f"{first.split(':', 1)[0]}: {server.group(1).strip()}"
    return first


def _sqlstate_of(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and state:
        return state
    diag = getattr(exc, "diag", None)
    state = getattr(diag, "sqlstate", None)
    if isinstance(state, str) and state:
        return state
    # ADBC errors carry the SQLSTATE in .sqlstate, and sometimes only in the message text.
    match = re.search(r"SQLSTATE: ([0-9A-Z]{5})", str(exc))
    return match.group(1) if match else None


def _constraint_of(exc: BaseException) -> str | None:
    diag = getattr(exc, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name:
        return str(name)
    match = re.search(r'constraint "([^"]+)"', str(exc))
    return match.group(1) if match else None


def translate(exc: BaseException, *, action: str) -> StorageError:
    """Translate a driver exception into the matching :class:`StorageError`.

    Parameters
    ----------
    exc
        The exception raised by psycopg, psycopg_pool or ADBC.
    action
        What agts was doing, for the message (``"insert metrics"``, ``"query orders"``).

    Returns
    -------
    StorageError
        The translated error; the caller raises it ``from exc``.
    """
    if isinstance(exc, StorageError):
        return exc
    state = _sqlstate_of(exc)
    message = f"{action} failed: {_detail_of(exc)}"
    if state is None:
        # Lost or refused connections surface from the drivers without a SQLSTATE.
        if _looks_like_connection_failure(exc):
            return ConnectError(message)
        return QueryError(message)
    cls = state[:2]
    err: StorageError
    if cls == "23":
        err = ConstraintError(message, constraint=_constraint_of(exc), sqlstate=state)
    elif cls == "08" or state in _SHUTDOWN_STATES:
        err = ConnectError(message, sqlstate=state)
    elif cls == "28":
        err = ConnectError(message, transient=False, sqlstate=state)
    elif cls in {"22", "42"}:
        err = QueryError(message, transient=False, sqlstate=state)
    else:
        err = QueryError(message, transient=state in _TRANSIENT_STATES, sqlstate=state)
    if state in _TRANSIENT_STATES:
        err.transient = True
    return err


def _looks_like_connection_failure(exc: BaseException) -> bool:
    names = {t.__name__ for t in type(exc).__mro__}
    if names & {"OperationalError", "PoolTimeout", "InterfaceError"}:
        return True
    text = str(exc).lower()
    return any(
        marker in text
        for marker in ("connection refused", "server closed the connection", "connection timed out",
                       "could not connect", "terminating connection", "no connection to the server",
                       "the connection is closed", "connection lost", "ssl syscall")
    )


def _fmt(value: Any) -> str:
    return redact(repr(value))
