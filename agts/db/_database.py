"""Connections: one psycopg pool for control statements, pooled ADBC connections for bulk data.

:class:`Database` opens both lazily except for one probe connection at construction, which fails
fast (within ``connection_timeout_sec``) with a :class:`~agts.errors.ConnectError` that names host
and port but never the password. It also reads the server's capabilities (:class:`ServerInfo`).

It is agts' one error boundary for the drivers: a psycopg or ADBC exception that leaves a
:meth:`Database.connection` or :meth:`Database.adbc` block becomes a
:class:`~agts.errors.StorageError` subclass (by SQLSTATE, transient flag kept, the original as
``__cause__``; see :func:`agts.errors.translate`) saying what agts was doing (``action=``). Code
inside a block may still catch a driver exception it expects (a unique violation it handles, a
lock it does not get); nothing else in agts translates driver errors.
"""

from __future__ import annotations

import logging
import math
import re
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, TypeVar

import psycopg
import psycopg.sql
import pyarrow as pa
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from agts.config import DatabaseConfig
from agts.db._conninfo import conninfo
from agts.db._replicas import Replicas, ReplicaState, try_elsewhere
from agts.db._small import SMALL_ROWS, fetch_small
from agts.errors import ConnectError, EditionError, StorageError, translate

__all__ = ["Database", "Edition", "ServerInfo"]

T = TypeVar("T")

log = logging.getLogger(__name__)

Edition = Literal["apache", "community"]



@dataclass(frozen=True)
class ServerInfo:
    """What the server is and can do, read at connect time.

    Attributes
    ----------
    postgres_version : str
        For example ``"15.18"``.
    timescaledb_version : str or None
        Version of the ``timescaledb`` extension installed in this database, or of the one
        available to install if it is not created yet.
    timescaledb_installed : bool
        Whether ``CREATE EXTENSION timescaledb`` has been run in this database.
    edition : {"apache", "community"}
        ``timescaledb.license``: ``apache`` gives hypertables and chunks only; ``community``
        (license ``timescale``) adds columnstore, continuous aggregates and policies.
    """

    postgres_version: str
    postgres_version_num: int
    timescaledb_version: str | None
    timescaledb_installed: bool
    edition: Edition
    database: str
    user: str

    @property
    def community(self) -> bool:
        """True on the Community (Timescale License) edition."""
        return self.edition == "community"

    def require_community(self, feature: str, alternative: str) -> None:
        """Raise :class:`EditionError` unless this is the Community edition."""
        if not self.community:
            raise EditionError(
                f"{feature} needs the TimescaleDB Community edition; this server runs the "
                f"{self.edition} edition (timescaledb.license = 'apache'). {alternative}"
            )


class Database:
    """The engine's connections to one database.

    Parameters
    ----------
    config
        Where to connect and the pool's size and timeouts.

    Raises
    ------
    ConnectError
        The server cannot be reached within ``connection_timeout_sec`` or refuses the login.
    StorageError
        The server has no TimescaleDB extension available.
    """

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._conninfo = conninfo(config)
        self.server = self._probe()
        self._pool = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=config.max_connections,
            timeout=config.connection_timeout_sec,
            open=False,
            name="agts",
        )
        self._adbc_idle: list[Any] = []
        self._adbc_idle_reads: list[Any] = []  # autocommit, for fetch_arrow
        self._adbc_lock = threading.Lock()
        self._adbc_max_idle = max(1, min(4, config.max_connections))
        self._closed = False
        self._replicas: Replicas | None = None
        # The server the reads of the current block go to (set by read() / on_primary()).
        self._read_on: ContextVar[Database | None] = ContextVar("agts_read_on", default=None)
        try:
            self._pool.open(wait=True, timeout=config.connection_timeout_sec)
        except PoolTimeout as exc:
            self._pool.close()
            raise ConnectError(
                f"cannot open a connection pool to {config.describe()} within "
                f"{config.connection_timeout_sec:g}s"
            ) from exc
        if config.replicas:
            self._replicas = Replicas(self, config)

    def connect_direct(self, *, search_path: str) -> psycopg.Connection[Any]:
        """A new connection outside the pool with its own ``search_path`` (for a library that
        manages its connections, as the Iceberg catalog does). The caller closes it."""
        params = conninfo_to_dict(self._conninfo)
        params["options"] = f"{params.get('options') or ''} -c search_path={search_path}".strip()
        return psycopg.connect(make_conninfo("", **params))

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool and every idle ADBC connection. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._replicas is not None:
            self._replicas.close()
        self._pool.close()
        self._adbc_discard_idle()

    def refresh_server_info(self) -> ServerInfo:
        """Read the capabilities again (after ``CREATE EXTENSION`` for example)."""
        with self.connection() as conn:
            self.server = _server_info(conn)
        return self.server

    # -- psycopg (control plane) -------------------------------------------------------------

    @contextmanager
    def connection(self, action: str = "query the database", *,
                   autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """A pooled psycopg connection; the block runs in a transaction committed on success
        (with ``autocommit``, each statement on its own: no BEGIN and COMMIT round trips, for
        blocks that only read).

        Raises
        ------
        StorageError
            A driver error in the block (translated; ``action`` says what failed), or
            :class:`~agts.errors.ConnectError` when no connection is available in time.
        """
        try:
            conn = self._checkout()
            try:
                if autocommit:
                    conn.autocommit = True
                with conn:  # commits on success, rolls back on an exception
                    yield conn
            finally:
                # Back to the pool in transaction mode, also when the block switched it itself
                # (``conn.autocommit = True`` for a VACUUM): the next block must get its BEGIN.
                if not conn.closed and conn.autocommit:
                    try:
                        conn.autocommit = False
                    except psycopg.Error:
                        conn.close()  # the pool replaces it
                self._pool.putconn(conn)
        except PoolTimeout as exc:
            raise ConnectError(
                f"no database connection available from {self.config.describe()} within "
                f"{self.config.connection_timeout_sec:g}s (pool of {self.config.max_connections})"
            ) from exc
        except psycopg.Error as exc:
            raise translate(exc, action=action) from exc

    def _checkout(self) -> psycopg.Connection[Any]:
        """A live pooled connection. The pool's own check would sleep a second after each dead
        connection (after a server restart every idle one is), so agts checks them itself: free
        unless the server wrote to the idle socket, and a dead one is simply replaced."""
        deadline = time.monotonic() + self.config.connection_timeout_sec
        while True:
            conn = self._pool.getconn(timeout=max(0.001, deadline - time.monotonic()))
            if _usable(conn):
                return conn
            conn.close()
            self._pool.putconn(conn)  # the pool replaces a closed connection

    @contextmanager
    def exclusive(self, name: str, *, wait: bool | float = False) -> Iterator[bool]:
        """Hold agts' maintenance lock ``name`` for the block; yields False when another session
        holds it: at once (``wait=False``), after ``wait`` seconds (a number), or never
        (``wait=True``: it waits as long as it takes).

        The lock is the row ``name`` of ``agts.locks`` held ``FOR UPDATE`` by a transaction of
        its own, open for the block: only roles that may update agts' tables can take it (a
        login with the reader role cannot hold archive runs or refreshes up, as it could with an
        advisory lock), and the server releases it when the session ends, also if the process
        dies.
        """
        with self.connection() as conn:
            try:
                conn.execute("INSERT INTO agts.locks (name) VALUES (%s) ON CONFLICT DO NOTHING",
                             [name])
                conn.commit()
                if wait is not True:
                    ms = max(1, int(float(wait) * 1000)) if wait else 0
                    conn.execute(f"SET LOCAL lock_timeout = {ms}" if ms else "SELECT 1")
                nowait = " NOWAIT" if wait is False else ""
                conn.execute("SELECT name FROM agts.locks WHERE name = %s FOR UPDATE" + nowait,
                             [name])
            except psycopg.errors.LockNotAvailable:
                conn.rollback()
                yield False
                return
            except psycopg.Error as exc:
                raise translate(exc, action=f"take the lock {name!r}") from exc
            try:
                yield True
            finally:
                conn.rollback()

    # -- reads: the primary or a replica ---------------------------------------------------

    def read(self, fn: Callable[[], T], *, after: int | None = None) -> T:
        """Run ``fn``, whose reads (:meth:`read_connection`, :meth:`read_arrow`,
        :meth:`read_adbc`) go to one server: a replica fit to serve (up, in recovery, lag within
        ``database.replica_max_lag_sec``; with ``after``, replayed up to that primary WAL
        position), else the primary. ``fn`` must only read: when a replica fails it (gone, or a
        conflict with recovery) it runs again on the next server, last the primary. Nested calls
        and :meth:`on_primary` blocks keep the server already chosen.
        """
        if self._replicas is None or self._read_on.get() is not None:
            return fn()
        for replica in self._replicas.candidates():
            try:
                if after is not None and not replica.replayed(after):
                    continue
                target = replica.database()
            except StorageError as exc:
                replica.failed(exc)
                continue
            token = self._read_on.set(target)
            try:
                return fn()
            except StorageError as exc:
                if not try_elsewhere(exc):
                    raise
                if isinstance(exc, ConnectError):
                    replica.failed(exc)
                log.warning("replica %s failed a read (%s); trying the next server",
                            replica.name, _first_line(exc))
            finally:
                self._read_on.reset(token)
        token = self._read_on.set(self)
        try:
            return fn()
        finally:
            self._read_on.reset(token)

    @contextmanager
    def on_primary(self) -> Iterator[None]:
        """Reads in the block go to the primary (to read your own writes at once)."""
        token = self._read_on.set(self)
        try:
            yield
        finally:
            self._read_on.reset(token)

    def read_target(self) -> Database:
        """The server :meth:`read` would use now (for a stream that chooses once)."""
        chosen = self._read_on.get()
        if chosen is not None or self._replicas is None:
            return chosen or self
        for replica in self._replicas.candidates():
            try:
                return replica.database()
            except StorageError as exc:
                replica.failed(exc)
        return self

    def replica_failed(self, target: Database, exc: StorageError) -> None:
        """``target`` (from :meth:`read_target`) failed a read: rest it for a while."""
        if self._replicas is not None:
            self._replicas.failed(target, exc)

    @property
    def has_replicas(self) -> bool:
        return self._replicas is not None

    def replica_status(self) -> list[ReplicaState]:
        """Every configured replica, checked now."""
        return self._replicas.check() if self._replicas is not None else []

    def primary_position(self) -> int | None:
        """The primary's WAL insert position, when there are replicas to compare it with."""
        return self._replicas.primary_position() if self._replicas is not None else None

    def read_connection(self, action: str = "read the database") -> Any:
        """:meth:`connection` on the server the current :meth:`read` chose (the primary
        outside one), in autocommit mode: a block of reads, each statement its own snapshot."""
        return (self._read_on.get() or self).connection(action, autocommit=True)

    def read_adbc(self, action: str = "read the database") -> Any:
        """:meth:`adbc` on the server the current :meth:`read` chose."""
        return (self._read_on.get() or self).adbc(action)

    def read_arrow(self, query: str, params: Any = (), *, action: str,
                   rows_hint: int | None = None) -> pa.Table:
        """:meth:`fetch_arrow` on the server the current :meth:`read` chose."""
        return (self._read_on.get() or self).fetch_arrow(query, params, action=action,
                                                         rows_hint=rows_hint)

    # -- ADBC (bulk data) --------------------------------------------------------------------

    @contextmanager
    def adbc(self, action: str = "query the database") -> Iterator[Any]:
        """An ADBC DBAPI connection (autocommit off) for Arrow in and out.

        The block must commit what it writes; on an exception the connection is rolled back and
        discarded, so a half-done COPY never leaks into the next user.

        Raises
        ------
        StorageError
            A driver error in the block (translated; ``action`` says what failed), or
            :class:`~agts.errors.ConnectError` when no connection can be opened.
        """
        conn, _ = self._adbc_take(ping=True)
        try:
            yield conn
        except BaseException as exc:
            _close_quietly(conn)
            if _is_driver_error(exc):
                raise translate(exc, action=action) from exc
            raise
        else:
            self._adbc_give(conn)

    def fetch_arrow(self, query: str, params: Any = (), *, action: str,
                    rows_hint: int | None = None) -> pa.Table:
        """The whole result of one SELECT as Arrow, on a pooled ADBC connection (or, when the
        caller expects at most :data:`~agts.db._small.SMALL_ROWS` rows, ``rows_hint``, over
        psycopg: see :mod:`agts.db._small`).

        ``query`` holds ``$n`` placeholders for ``params`` (or none: an unparameterized SELECT is
        read by ADBC as a binary COPY, the fastest path); it is built from agts' own constants.
        A read whose reused idle connection turns out dead (the server restarted, or ended the
        session) runs once more on a new connection: a read is safe to repeat, and this way the
        pool pays no ping per call. A failure on the new connection is raised.
        """
        if rows_hint is not None and rows_hint <= SMALL_ROWS:
            with self.connection(action, autocommit=True) as conn:
                small = fetch_small(conn, query, tuple(params))
            if small is not None:
                return small
        inlined = _inline(query, tuple(params))
        parameters = None if inlined is not None else _bind_batch(params)
        while True:
            conn, reused = self._adbc_take(ping=False, reading=True)
            try:
                with conn.cursor() as cur:
                    if inlined is not None:
                        cur.execute(inlined)
                    else:
                        cur.execute(query, parameters=parameters)
                    table: pa.Table = cur.fetch_arrow_table()
            except BaseException as exc:
                _close_quietly(conn)
                if not _is_driver_error(exc):
                    raise
                err = translate(exc, action=action)
                if reused and isinstance(err, ConnectError):
                    # Once: the idle ones are likely dead too (a restart), so the next try
                    # opens a new connection; if that one fails as well, the caller hears it.
                    self._adbc_discard_idle()
                    continue
                raise err from exc
            self._adbc_give(conn, reading=True)
            return table

    def _adbc_take(self, *, ping: bool, reading: bool = False) -> tuple[Any, bool]:
        """An idle connection (True: reused) or a new one. With ``ping``, an idle connection is
        checked first (one round trip, ~0.1 ms locally) and dropped if dead: the driver gives no
        socket to look at, and a restart or an idle-session timeout ends a connection without a
        word. :meth:`adbc` blocks may write, so they cannot be repeated; they pay the ping.

        ``reading`` connections (:meth:`fetch_arrow`) are in autocommit mode: one statement
        needs no transaction, and ADBC's BEGIN and ROLLBACK around it cost ~0.4 ms a query.
        """
        idle = self._adbc_idle_reads if reading else self._adbc_idle
        while True:
            with self._adbc_lock:
                if not idle:
                    break
                conn = idle.pop()
            if not ping or _alive(conn):
                return conn, True
            _close_quietly(conn)
        return self._adbc_connect(autocommit=reading), False

    def _adbc_discard_idle(self) -> None:
        with self._adbc_lock:
            idle = self._adbc_idle + self._adbc_idle_reads
            self._adbc_idle, self._adbc_idle_reads = [], []
        for conn in idle:
            _close_quietly(conn)

    def _adbc_give(self, conn: Any, *, reading: bool = False) -> None:
        if not reading:
            try:
                conn.rollback()  # end any read transaction the block left open
            except Exception:
                _close_quietly(conn)
                return
        idle = self._adbc_idle_reads if reading else self._adbc_idle
        with self._adbc_lock:
            if not self._closed and len(idle) < self._adbc_max_idle:
                idle.append(conn)
                return
        _close_quietly(conn)

    def _adbc_connect(self, *, autocommit: bool = False) -> Any:
        import adbc_driver_postgresql.dbapi as adbc_dbapi

        try:
            return adbc_dbapi.connect(self._conninfo, autocommit=autocommit)
        except Exception as exc:
            raise ConnectError(
                f"cannot open an ADBC connection to {self.config.describe()}: "
                f"{_first_line(exc)}"
            ) from None

    # -- internals ---------------------------------------------------------------------------

    def _probe(self) -> ServerInfo:
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                return _server_info(conn)
        except psycopg.OperationalError as exc:
            transient = "password authentication failed" not in str(exc)
            raise ConnectError(
                f"cannot connect to {self.config.describe()}: {_first_line(exc)}",
                transient=transient,
            ) from None
        except psycopg.Error as exc:
            raise translate(exc, action=f"connect to {self.config.describe()}") from None


def _server_info(conn: psycopg.Connection[Any]) -> ServerInfo:
    row = conn.execute(
        """
        SELECT current_setting('server_version'),
               current_setting('server_version_num')::int,
               (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
               (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),
               current_setting('timescaledb.license', true),
               current_database(), current_user
        """
    ).fetchone()
    assert row is not None
    version, version_num, installed, available, license_, database, user = row
    if installed is None and available is None:
        raise StorageError(
            f"TimescaleDB is not available on the server of database {database!r} "
            f"(PostgreSQL {version}): install the extension (agts local start does it on "
            "Debian/Ubuntu) or use the docker-compose.yml service"
        )
    edition: Edition = "apache" if (license_ or "apache") == "apache" else "community"
    if installed is None:
        # The license setting only exists once the library is loaded; without the extension the
        # answer comes from shared_preload_libraries at best. Report apache until it is created.
        edition = "community" if license_ == "timescale" else "apache"
    return ServerInfo(
        postgres_version=str(version).split()[0],
        postgres_version_num=int(version_num),
        timescaledb_version=installed or available,
        timescaledb_installed=installed is not None,
        edition=edition,
        database=str(database),
        user=str(user),
    )


def _is_driver_error(exc: BaseException) -> bool:
    """A psycopg or ADBC exception (every ADBC DB-API error is an ``adbc_driver_manager.Error``)."""
    import adbc_driver_manager

    return isinstance(exc, psycopg.Error | adbc_driver_manager.Error)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_UTC_MICROS = pa.timestamp("us", tz="UTC")


_PLACEHOLDER = re.compile(r"\$(\d+)")


def _literal(value: Any) -> str | None:
    """``value`` as SQL text, for the types agts' statements bind; None for any other."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"'{value!r}'::float8" if not math.isfinite(value) else f"{value!r}::float8"
    if isinstance(value, datetime):
        kind = "timestamptz" if value.tzinfo is not None else "timestamp"
        return f"'{value.isoformat()}'::{kind}"
    if isinstance(value, timedelta):
        # days apart, as psycopg sends them: '1 day' and '24:00:00' are different intervals
        return (f"'{value.days} days {value.seconds} seconds {value.microseconds} "
                "microseconds'::interval")
    if isinstance(value, date):
        return f"'{value.isoformat()}'::date"
    if isinstance(value, str):
        return psycopg.sql.Literal(value).as_string(None)
    if isinstance(value, list) and set(map(type, value)) <= {int}:  # not bool, no subclass
        return "'{" + ",".join(map(str, value)) + "}'::bigint[]"
    return None


def _inline(query: str, params: tuple[Any, ...]) -> str | None:
    """``query`` with its ``$n`` placeholders replaced by literals, or None when a value has a
    type :func:`_literal` does not write. ADBC reads a statement without parameters as a binary
    COPY in one round trip; with parameters it prepares first (another round trip, ~1 ms for a
    2,400-row aggregate here)."""
    if not params:
        return query
    texts = [_literal(value) for value in params]
    if any(text is None for text in texts):
        return None
    return _PLACEHOLDER.sub(lambda m: f"({texts[int(m.group(1)) - 1]})", query)


def _bind_batch(params: Any) -> pa.RecordBatch | None:
    """``params`` as the one-row batch ADBC binds, typed as pyarrow would infer them except for
    aware datetimes, converted here: pyarrow's own conversion tries ``import pytz`` on every
    call where it is not installed (~0.2 ms a query)."""
    values = tuple(params)
    if not values:
        return None
    arrays = []
    for value in values:
        if isinstance(value, datetime) and value.tzinfo is not None:
            arrays.append(pa.array([(value - _EPOCH) // _MICRO], pa.int64()).cast(_UTC_MICROS))
        else:
            arrays.append(pa.array([value]))
    return pa.RecordBatch.from_arrays(arrays, names=[str(i) for i in range(len(values))])


def _alive(conn: Any) -> bool:
    """One round trip on an ADBC connection: False when it is dead."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        conn.rollback()
    except Exception:
        return False
    return True


def _usable(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle psycopg connection works: yes without a round trip unless the server has
    written to its socket (a termination notice and end of file after a restart, an idle-session
    timeout, a notification), then one ``SELECT 1`` decides."""
    if conn.broken or conn.closed:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        readable = [True]
    if not readable:
        return True
    try:
        ConnectionPool.check_connection(conn)
    except Exception:
        return False
    return True


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        log.debug("ignoring error while closing a discarded connection", exc_info=True)


def _first_line(exc: BaseException) -> str:
    from agts.errors import redact

    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)
