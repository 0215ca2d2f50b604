"""The buffered pipeline: batching, backpressure policies, asyncio, outage spool and replay."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

import agts
from agts.config import StorageConfig

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def point(i: int, name: str = "lat") -> agts.MetricPoint:
    return agts.MetricPoint(T0 + dt.timedelta(milliseconds=i), name, float(i), {"venue": "x"})


def count(engine: agts.StorageEngine) -> tuple[int, int, int]:
    with engine.db.connection() as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT time), coalesce(sum(value), 0)::bigint "
                           "FROM agts.metric_points").fetchone()
    assert row is not None
    return row


def test_pipeline_batches_flushes_and_counts(engine: agts.StorageEngine, tmp_path: Path) -> None:
    with engine.ingestor(batch_size=50, flush_interval_ms=20, spool_dir=tmp_path) as ing:
        for i in range(120):
            ing.put(point(i))
        ing.flush(timeout=30)
        stats = ing.stats()
    assert count(engine) == (120, 120, sum(range(120)))
    assert (stats.points_accepted, stats.points_written, stats.buffer_depth) == (120, 120, 0)
    assert stats.batches_written >= 3 and stats.spooled_batches == 0
    assert stats.lag_seconds >= 0 and stats.points_per_second > 0
    assert {p.metric_name for p in stats.as_points()} >= {"agts_ingest_points_written"}


def test_asyncio_producers(engine: agts.StorageEngine, tmp_path: Path) -> None:
    async def main() -> None:
        async with engine.ingestor(batch_size=100, spool_dir=tmp_path) as ing:
            await asyncio.gather(*[ing.aput([point(j) for j in range(k, k + 10)])
                                   for k in range(0, 300, 10)])
            await ing.aflush()

    asyncio.run(main())
    assert count(engine) == (300, 300, sum(range(300)))


@contextmanager
def points_locked(engine: agts.StorageEngine) -> Iterator[None]:
    """A slow database: another session holds agts.metric_points, so writes wait."""
    with psycopg.connect(engine.db.config.conninfo()) as conn:
        conn.execute("LOCK TABLE agts.metric_points IN ACCESS EXCLUSIVE MODE")
        yield


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.mark.parametrize(("policy", "error", "match"), [
    pytest.param("raise", agts.BackpressureError, "ingest buffer is full .*policy 'raise'",
                 id="raise"),
    pytest.param("block", agts.BackpressureError, "ingest buffer is full .*policy 'block'",
                 id="block-times-out"),
])
def test_backpressure_when_the_buffer_is_full(
    engine: agts.StorageEngine, tmp_path: Path, policy: str, error: type[Exception], match: str,
) -> None:
    engine.insert_metrics_batch([point(0)])  # series cached: the flusher only needs the COPY
    ing = engine.ingestor(batch_size=10, max_buffer_size=20, backpressure=policy,  # type: ignore[arg-type]
                          backpressure_timeout_sec=0.3, spool_dir=tmp_path)
    with ing, points_locked(engine):
        ing.put([point(i) for i in range(1, 11)])
        wait_until(lambda: ing._pending_points == 0)  # the flusher is stuck writing it
        ing.put([point(i) for i in range(11, 21)])  # fills the buffer
        started = time.monotonic()
        with pytest.raises(error, match=match):
            ing.put(point(21))
        waited = time.monotonic() - started
        assert waited >= 0.3 if policy == "block" else waited < 0.3
    assert count(engine)[0] == 21


def test_block_waits_for_room(engine: agts.StorageEngine, tmp_path: Path) -> None:
    engine.insert_metrics_batch([point(0)])
    with engine.ingestor(batch_size=10, max_buffer_size=10, spool_dir=tmp_path) as ing:
        with points_locked(engine):
            ing.put([point(i) for i in range(1, 11)])
            wait_until(lambda: ing._pending_points == 0)
            done = threading.Event()

            def produce() -> None:
                ing.put([point(i) for i in range(11, 16)])
                done.set()

            producer = threading.Thread(target=produce)
            producer.start()
            assert not done.wait(0.3)  # blocked while the database is slow
        producer.join(10)
        assert done.is_set()
    assert count(engine)[0] == 16


def test_drop_oldest_counts_what_it_drops(engine: agts.StorageEngine, tmp_path: Path) -> None:
    engine.insert_metrics_batch([point(0)])
    with engine.ingestor(batch_size=10, max_buffer_size=20, backpressure="drop_oldest",
                         spool_dir=tmp_path) as ing, points_locked(engine):
        ing.put([point(i) for i in range(1, 11)])
        wait_until(lambda: ing._pending_points == 0)  # 1..10 in flight: never dropped
        ing.put([point(i) for i in range(11, 21)])
        ing.put([point(i) for i in range(21, 24)])  # drops 11, 12, 13
        assert ing.stats().points_dropped == 3
    with engine.db.connection() as conn:
        values = [r[0] for r in conn.execute(
            "SELECT value FROM agts.metric_points ORDER BY time").fetchall()]
    assert values == [float(i) for i in [*range(0, 11), *range(14, 24)]]


def test_put_validates_at_the_door(engine: agts.StorageEngine, tmp_path: Path) -> None:
    with engine.ingestor(spool_dir=tmp_path) as ing:
        with pytest.raises(agts.ValidationError, match="value is NaN"):
            ing.put(agts.MetricPoint(T0, "m", float("nan")))
        assert ing.stats().points_accepted == 0
    with engine.ingestor(spool_dir=tmp_path, on_error="skip") as ing:
        skipped = ing.put([agts.MetricPoint(T0, "m", float("nan")), point(1)])
    assert skipped.select("row").to_series().to_list() == [0]
    assert count(engine)[0] == 1


def test_one_ingestor_per_spool_directory(engine: agts.StorageEngine, tmp_path: Path) -> None:
    with engine.ingestor(spool_dir=tmp_path), pytest.raises(agts.StorageError, match="in use"):
        engine.ingestor(spool_dir=tmp_path)


def test_a_batch_the_database_refuses_for_good_is_set_aside(
        engine: agts.StorageEngine, tmp_path: Path) -> None:
    """A batch refused by a constraint (not an outage) is kept in the spool's failed/ folder for
    a person, never replayed; the batches around it are stored."""
    with engine.db.connection() as conn:  # a rule the server enforces and agts does not check
        conn.execute("ALTER TABLE agts.metric_points ADD CONSTRAINT test_non_negative "
                     "CHECK (value >= 0)")
    with engine.ingestor(batch_size=10, flush_interval_ms=10_000, spool_dir=tmp_path) as ing:
        ing.put([point(i) for i in range(10)])
        ing.flush(timeout=30)
        ing.put([point(i) for i in range(10, 19)] + [agts.MetricPoint(T0, "lat", -1.0)])
        ing.flush(timeout=30)
        ing.put([point(i) for i in range(20, 30)])
        ing.flush(timeout=30)
        stats = ing.stats()
    assert count(engine)[0] == 20
    assert (stats.points_written, stats.errors, stats.spool_pending) == (20, 1, 0)
    assert "test_non_negative" in (stats.last_error or "")
    failed = list((tmp_path / "failed").glob("*.arrow"))
    assert len(failed) == 1
    with pa.memory_map(str(failed[0])) as source:
        kept = pa.ipc.open_file(source).read_all()
    assert kept.num_rows == 10
    assert sorted(kept.column("value").to_pylist()) == [-1.0, *map(float, range(10, 19))]
    assert set(kept.column("metric_name").to_pylist()) == {"lat"}
    with engine.ingestor(spool_dir=tmp_path) as again:  # the next ingestor does not replay it
        again.flush(timeout=30)
        assert again.stats().replayed_batches == 0
    assert count(engine)[0] == 20 and failed[0].exists()


def _allow_connections(config: StorageConfig, allow: bool) -> None:
    admin = config.with_overrides(database={"database": "postgres"})
    name = config.database.database
    with psycopg.connect(admin.database.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(name), sql.SQL("true" if allow else "false")))
        if not allow:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))


def test_outage_spools_and_replays_exactly_once(config: StorageConfig, tmp_path: Path) -> None:
    config = config.with_overrides(database={"connection_timeout_sec": 1})
    with agts.connect(config) as engine:
        ing = engine.ingestor(batch_size=100, flush_interval_ms=20, spool_dir=tmp_path)
        ing.put([point(i) for i in range(100)])
        ing.flush(timeout=30)  # the series is registered and cached
        _allow_connections(config, False)
        try:
            for k in range(100, 600, 100):  # keep producing during the outage
                ing.put([point(i) for i in range(k, k + 100)])
            ing.flush(timeout=60)
            stats = ing.stats()
            assert stats.spooled_batches >= 1 and stats.spool_pending >= 1
            assert len(list(tmp_path.glob("*.arrow"))) == stats.spool_pending
        finally:
            _allow_connections(config, True)
        for k in range(600, 700, 100):
            ing.put([point(i) for i in range(k, k + 100)])
        ing.close(timeout=60)
        assert ing.stats().spool_pending == 0
        assert ing.stats().replayed_batches >= 1
        assert count(engine) == (700, 700, sum(range(700)))
        assert list(tmp_path.glob("*.arrow")) == []


def test_spool_survives_the_ingestor_and_is_replayed_by_the_next(
    config: StorageConfig, tmp_path: Path
) -> None:
    config = config.with_overrides(database={"connection_timeout_sec": 1})
    with agts.connect(config) as engine:
        engine.insert_metrics_batch([point(0)])
        ing = engine.ingestor(batch_size=50, flush_interval_ms=20, spool_dir=tmp_path)
        _allow_connections(config, False)
        try:
            ing.put([point(i) for i in range(1, 151)])
            ing.close(timeout=60)  # the database is away: everything ends in the spool
        finally:
            _allow_connections(config, True)
        assert ing.stats().spool_pending >= 1
        with engine.ingestor(spool_dir=tmp_path) as again:
            again.flush(timeout=30)
        assert count(engine) == (151, 151, sum(range(151)))


def test_spool_full_is_a_clear_error(config: StorageConfig, tmp_path: Path) -> None:
    config = config.with_overrides(database={"connection_timeout_sec": 1})
    with agts.connect(config) as engine:
        engine.insert_metrics_batch([point(0)])
        ing = engine.ingestor(batch_size=10, max_buffer_size=20, flush_interval_ms=10,
                              spool_dir=tmp_path, spool_max_bytes=1,
                              backpressure="raise")
        _allow_connections(config, False)
        try:
            with pytest.raises(agts.SpoolFullError, match="spool is full"):
                deadline = time.monotonic() + 30
                i = 1
                while time.monotonic() < deadline:
                    try:
                        ing.put(point(i))
                        i += 1
                    except agts.BackpressureError as exc:
                        if isinstance(exc, agts.SpoolFullError):
                            raise
                        time.sleep(0.05)  # the flusher is still trying the database
        finally:
            _allow_connections(config, True)
        ing.close(timeout=60)
        assert ing.stats().points_written == ing.stats().points_accepted
