"""Fixtures of the reliability suite: a throwaway cluster to stop and restart, row checks, and
the check that no session of the test database is left idle in a transaction."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.db import _local, conninfo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A private cluster on a free port: start, stop (fast shutdown) and restart it at will.

    The ``AGTS_LOCAL_*`` variables are set only around the calls into :mod:`agts.db._local`, so the
    rest of the session keeps using the main test server.
    """

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.password: str | None = None

    @contextmanager
    def _env(self) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("AGTS_LOCAL_DIR", str(self.directory))
            mp.setenv("AGTS_LOCAL_PORT", str(self.port))
            yield

    def start(self) -> None:
        with self._env():
            _local.start(install=False)
            self.password = _local.local_password()

    def stop(self) -> None:
        with self._env():
            _local.stop()

    def append_conf(self, text: str) -> None:
        with (self.directory / "data" / "postgresql.conf").open("a") as conf:
            conf.write(text)

    def config(self, **database: object) -> StorageConfig:
        return StorageConfig.load(env={}, overrides={"database": {
            "port": self.port, "password": self.password, "connection_timeout_sec": 2, **database}})


class StreamingReplica:
    """A streaming replica of a private :class:`Cluster`: ``pg_basebackup -R`` over loopback,
    on a port of its own; start, stop (fast or immediate), pause and resume its replay."""

    def __init__(self, primary: Cluster, directory: Path, port: int) -> None:
        self.primary = primary
        self.directory = directory
        self.port = port
        self.data = directory / "data"
        bindir = _local._bindir()
        assert bindir is not None
        self._bin = bindir

    def create(self) -> None:
        self.directory.mkdir(parents=True)
        self.directory.chmod(0o755)
        _local._chown(self.directory)
        source = (f"host=127.0.0.1 port={self.primary.port} user={_local.LOCAL_USER} "
                  f"password={self.primary.password}")
        done = _local._run([str(self._bin / "pg_basebackup"), "-D", str(self.data), "-d", source,
                            "-R", "-X", "stream", "-c", "fast"], check=False)
        assert done.returncode == 0, done.stderr
        run_dir = self.directory / "run"
        run_dir.mkdir()
        _local._chown(run_dir)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\n# the replica\nport = {self.port}\n"
                       f"unix_socket_directories = '{run_dir}'\nhot_standby = on\n")

    def start(self) -> None:
        log = self.directory / "server.log"
        done = _local._run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-l", str(log),
                            "-w", "-t", "60", "start"], check=False)
        assert done.returncode == 0, done.stderr + (log.read_text()[-2000:] if log.exists() else "")

    def stop(self, mode: str = "fast") -> None:
        _local._run([str(self._bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                    check=False)

    def sql(self, statement: str) -> Any:
        """Run ``statement`` on the replica (superuser, database ``postgres``)."""
        cfg = self.primary.config(port=self.port, database="postgres")
        with psycopg.connect(conninfo(cfg.database), autocommit=True) as conn:
            row = conn.execute(statement).fetchone()
        return row[0] if row else None

    def pause(self) -> None:
        self.sql("SELECT pg_wal_replay_pause()")

    def resume(self) -> None:
        self.sql("SELECT pg_wal_replay_resume()")

    def caught_up(self, timeout: float = 30) -> None:
        """Wait until the replica has replayed everything the primary has written so far."""
        with admin(self.primary.config()) as conn:
            target = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]
        wait_for(lambda: self.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"),
                 timeout, "the replica to catch up")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A migrated throwaway cluster shared by the tests of one module."""
    root = Path("/var/tmp") if os.geteuid() == 0 else Path.home() / ".cache"
    directory = root / f"agts-reliability-{os.getpid()}-{free_port()}"
    c = Cluster(directory, free_port())
    try:
        c.start()
        with agts.connect(c.config(), migrate=True):
            pass
        yield c
    finally:
        try:
            c.stop()
        finally:
            shutil.rmtree(directory, ignore_errors=True)


def admin(config: StorageConfig) -> psycopg.Connection:
    """An autocommit superuser connection to the server of ``config`` (database ``postgres``)."""
    cfg = config.with_overrides(database={"database": "postgres"})
    return psycopg.connect(conninfo(cfg.database), autocommit=True)


def idle_in_transaction(config: StorageConfig) -> list[tuple[int, str, str]]:
    """Sessions of the test database left open in a transaction (pid, state, last query)."""
    with admin(config) as conn:
        return conn.execute(
            "SELECT pid, state, left(query, 120) FROM pg_stat_activity WHERE datname = %s "
            "AND state LIKE 'idle in transaction%%'", (config.database.database,)).fetchall()


def allow_connections(config: StorageConfig, allow: bool) -> None:
    """Open or close the test database to new sessions (and end the current ones when closing)."""
    name = config.database.database
    with admin(config) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")))
        if not allow:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def stored(engine: agts.StorageEngine, metric: str = "seq") -> list[float]:
    """Every stored value of ``metric``, sorted (duplicates kept, so a count check sees them)."""
    with engine.db.connection() as conn:
        rows = conn.execute(
            "SELECT p.value FROM agts.metric_points p JOIN agts.series s USING (series_id) "
            "WHERE s.metric_name = %s ORDER BY p.value", (metric,)).fetchall()
    return [r[0] for r in rows]


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Record(Protocol):
    def __call__(self, fault: str, **figures: Any) -> None: ...


_RESULTS: list[dict[str, Any]] = []


@pytest.fixture(scope="session")
def _results_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.getbasetemp() / "reliability.json"
    yield path
    if _RESULTS:
        path.write_text(json.dumps(_RESULTS, indent=2, default=str))
        print(f"\nreliability figures ({len(_RESULTS)} entries) in {path}")
        for entry in _RESULTS:
            print("  " + json.dumps(entry, default=str))


@pytest.fixture
def record(_results_file: Path, request: pytest.FixtureRequest) -> Record:
    """Note what a fault or load test injected and checked; printed (with ``-s``) and written to
    ``reliability.json`` in the session's pytest temp directory at the end."""

    def _record(fault: str, **figures: Any) -> None:
        _RESULTS.append({"test": request.node.nodeid, "fault": fault, **figures})

    return _record


class Call:
    """``fn()`` in a (daemon) thread; its result or exception once joined."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self, timeout: float = 30) -> Call:
        self._thread.join(timeout)
        assert self.done(), "the call did not return"
        return self
