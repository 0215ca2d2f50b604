"""Faults injected into a live database session: the backend killed with pg_terminate_backend in
the middle of a COPY and of a query, statement timeouts, and a spool on a full disk.

Each ends with a count check: what the caller was told was stored is stored exactly once, a failed
batch leaves nothing behind (no points, no ledger row), the error is a clear agts error, and the
next call (or the ingestor, on its own) recovers.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import agts
from agts.config import StorageConfig
from agts.db import conninfo
from tests.reliability._data import T0, check_exactly_once, seq_points
from tests.reliability.conftest import (
    Call,
    Record,
    admin,
    allow_connections,
    idle_in_transaction,
    stored,
    wait_for,
)


@contextmanager
def locked(config: StorageConfig, mode: str, table: str = "agts.metric_points") -> Iterator[None]:
    """Hold ``LOCK TABLE table IN mode MODE`` in another session for the duration of the block."""
    with psycopg.connect(conninfo(config.database)) as conn:
        conn.execute(f"LOCK TABLE {table} IN {mode} MODE")
        yield
        conn.rollback()


def waiting_backend(config: StorageConfig, like: str, timeout: float = 20, *,
                    other_than: int | None = None) -> int:
    """The pid of the session of the test database waiting on a lock in a statement ``like``."""
    found: list[int] = []

    def probe() -> bool:
        with admin(config) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                "AND query ILIKE %s", (config.database.database, like)).fetchall()
        found[:] = [r[0] for r in rows if r[0] != other_than]
        return bool(found)

    wait_for(probe, timeout, f"a session blocked in {like!r}")
    return found[0]


def terminate(config: StorageConfig, pid: int) -> None:
    with admin(config) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def ledger_rows(engine: agts.StorageEngine, batch_id: str) -> int:
    with engine.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM agts.ingest_batches WHERE batch_id = %s",
                           (batch_id,)).fetchone()
    return int(row[0]) if row else 0


# -- the backend killed mid-COPY -------------------------------------------------------------------


def test_backend_killed_mid_copy_leaves_nothing_and_the_retry_stores_once(
    config: StorageConfig, record: Record
) -> None:
    with agts.connect(config) as engine:
        engine.insert_metrics_batch(seq_points(0, 10))  # series registered, pools warm
        batch = seq_points(10, 5010)
        batch_id = str(uuid.uuid4())
        with locked(config, "SHARE"):  # the COPY waits here, mid-statement
            call = Call(lambda: engine.insert_metrics_batch(batch, batch_id=batch_id))
            terminate(config, waiting_backend(config, "COPY%metric_points%"))
            call.join()
        assert isinstance(call.error, agts.ConnectError), repr(call.error)
        assert call.error.transient is True
        assert "insert metrics failed" in str(call.error)
        assert "terminat" in str(call.error).lower() or "closed" in str(call.error).lower()
        # No partial batch: none of its points, no ledger row.
        assert stored(engine) == [float(v) for v in range(10)]
        assert ledger_rows(engine, batch_id) == 0
        assert idle_in_transaction(config) == []

        again = engine.insert_metrics_batch(batch, batch_id=batch_id)  # the documented retry
        assert (again.rows_written, again.already_ingested) == (5000, False)
        resent = engine.insert_metrics_batch(batch, batch_id=batch_id)
        assert (resent.rows_written, resent.already_ingested) == (0, True)
        rows = check_exactly_once(stored(engine), range(5010))
    record("pg_terminate_backend mid-COPY (insert_metrics_batch)", rows_checked=rows,
           partial_rows_visible=0, duplicates=0, lost=0)


def test_ingestor_recovers_by_itself_when_its_copy_is_killed(
    config: StorageConfig, tmp_path: Path, record: Record
) -> None:
    with agts.connect(config) as engine:
        ing = engine.ingestor(batch_size=2000, flush_interval_ms=20, spool_dir=tmp_path)
        ing.put(seq_points(0, 10))
        ing.flush(timeout=30)
        with locked(config, "SHARE"):
            ing.put(seq_points(10, 2010))
            pid = waiting_backend(config, "COPY%metric_points%")
            terminate(config, pid)
        ing.flush(timeout=60)
        stats = ing.stats()
        ing.close(timeout=30)
        assert stats.errors >= 1 and stats.retries >= 1
        assert "insert metrics failed" in (stats.last_error or "")
        assert stats.points_written == 2010 and stats.spool_pending == 0
        rows = check_exactly_once(stored(engine), range(2010))
        assert idle_in_transaction(config) == []
    record("pg_terminate_backend mid-COPY (ingestor)", rows_checked=rows, retries=stats.retries,
           duplicates=0, lost=0)


# -- the backend killed mid-query ------------------------------------------------------------------

QUERIES = [
    pytest.param(lambda e: e.query_metrics("seq", T0, T0 + timedelta(hours=1)),
                 "agts.metric_points", "%metric_points%", id="query_metrics"),
    pytest.param(lambda e: e.query_aggregated("seq", T0, T0 + timedelta(hours=1), "1s", "avg"),
                 "agts.metric_points", "%metric_points%", id="query_aggregated"),
    pytest.param(lambda e: agts.ExecutionStore(e).query_fills(T0, T0 + timedelta(hours=1)),
                 "agts.fills", "%agts.fills%", id="query_fills"),
]


@pytest.mark.parametrize(("query", "table", "like"), QUERIES)
def test_backend_killed_mid_query_is_a_clear_error_and_the_next_query_works(
    config: StorageConfig, query: Callable[[agts.StorageEngine], Any], table: str, like: str,
    record: Record,
) -> None:
    with agts.connect(config) as engine:
        engine.insert_metrics_batch(seq_points(0, 3000))
        before = query(engine).height
        engine.clear_query_cache()
        with locked(config, "ACCESS EXCLUSIVE", table):
            call = Call(lambda: query(engine))
            first = waiting_backend(config, like)
            terminate(config, first)
            # A read on a reused connection that dies is run once more, on a new connection
            # (after a restart every idle connection is dead); that one is killed as well.
            terminate(config, waiting_backend(config, like, other_than=first))
            call.join()
        assert isinstance(call.error, agts.ConnectError), repr(call.error)
        assert call.error.transient is True
        assert "failed" in str(call.error)
        assert query(engine).height == before  # the pool replaced the dead connection
        assert stored(engine) == [float(v) for v in range(3000)]
        assert idle_in_transaction(config) == []
    record("pg_terminate_backend mid-query", query=like, rows_checked=3000)


# -- statement timeout ---------------------------------------------------------------------------


def test_statement_timeout_is_a_transient_query_error_and_writes_nothing(
    config: StorageConfig, record: Record
) -> None:
    cfg = config.with_overrides(database={"statement_timeout_sec": 0.5})
    with agts.connect(cfg) as engine:
        engine.insert_metrics_batch(seq_points(0, 10))
        batch_id = str(uuid.uuid4())
        with locked(config, "SHARE"):
            started = time.monotonic()
            with pytest.raises(agts.QueryError, match="canceling statement due to statement timeout"
                               ) as info:
                engine.insert_metrics_batch(seq_points(10, 1010), batch_id=batch_id)
            assert time.monotonic() - started < 5
        assert info.value.transient is True and info.value.sqlstate == "57014"
        assert ledger_rows(engine, batch_id) == 0
        assert stored(engine) == [float(v) for v in range(10)]
        with locked(config, "ACCESS EXCLUSIVE"), pytest.raises(
                agts.QueryError, match="query metrics failed: .*statement timeout") as info:
            engine.query_metrics("seq", T0, T0 + timedelta(hours=1))
        assert info.value.transient is True
        assert idle_in_transaction(config) == []
        # Short statements are unaffected; the retry stores the batch once.
        assert engine.insert_metrics_batch(seq_points(10, 1010), batch_id=batch_id).rows_written == 1000
        assert engine.query_metrics("seq", T0, T0 + timedelta(hours=1)).height == 1010
    record("statement timeout (0.5 s) on COPY and on a query", rows_checked=1010, duplicates=0,
           lost=0)


def test_ingestor_spools_through_statement_timeouts_and_replays(
    config: StorageConfig, tmp_path: Path, record: Record
) -> None:
    cfg = config.with_overrides(database={"statement_timeout_sec": 0.3})
    with agts.connect(cfg) as engine:
        ing = engine.ingestor(batch_size=500, flush_interval_ms=20, spool_dir=tmp_path)
        ing.put(seq_points(0, 10))
        ing.flush(timeout=30)
        with locked(config, "SHARE"):
            ing.put(seq_points(10, 2010))
            wait_for(lambda: ing.stats().spooled_batches >= 1, 30, "a batch spooled after timeouts")
        ing.close(timeout=60)
        stats = ing.stats()
        assert stats.spool_pending == 0 and stats.replayed_batches >= 1
        assert "statement timeout" in (stats.last_error or "")
        rows = check_exactly_once(stored(engine), range(2010))
    record("statement timeout in the ingestor (retries, spool, replay)", rows_checked=rows,
           spooled_batches=stats.spooled_batches, duplicates=0, lost=0)


# -- the spool on a full disk ----------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (a real ENOSPC); skips where mounting is not allowed."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_spool_on_a_full_disk_refuses_with_spool_full_and_keeps_what_it_acknowledged(
    config: StorageConfig, tiny_disk: Path, record: Record
) -> None:
    cfg = config.with_overrides(database={"connection_timeout_sec": 1})
    with agts.connect(cfg) as engine:
        engine.insert_metrics_batch(seq_points(0, 1))
        ing = engine.ingestor(batch_size=2000, max_buffer_size=4000, flush_interval_ms=10,
                              spool_dir=tiny_disk, backpressure="raise")
        acked = 1
        refused: agts.StorageError | None = None
        allow_connections(cfg, False)
        try:
            deadline = time.monotonic() + 60
            while refused is None and time.monotonic() < deadline:
                try:
                    ing.put(seq_points(acked, acked + 500))
                    acked += 500
                except agts.SpoolFullError as exc:
                    refused = exc
                except agts.BackpressureError:
                    time.sleep(0.05)  # the flusher is still trying the database
            assert refused is not None, "the full disk was never reported"
            assert "spool is full" in str(refused)
            assert ing.stats().spool_pending >= 1
            assert "no space left on device" in (ing.stats().last_error or "").lower()
        finally:
            allow_connections(cfg, True)
        ing.close(timeout=60)
        stats = ing.stats()
        assert stats.spool_pending == 0
        rows = check_exactly_once(stored(engine), range(acked))
        assert list(tiny_disk.glob("*.tmp")) == []
    record("spool on a full 256 KiB tmpfs during an outage", rows_checked=rows,
           acknowledged=acked, spooled_batches=stats.spooled_batches, duplicates=0, lost=0)
