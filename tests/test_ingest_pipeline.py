"""The buffered pipeline: batching, backpressure policies, asyncio, outage spool and replay."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import string
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.db import conninfo

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
    with psycopg.connect(conninfo(engine.db.config)) as conn:
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


def test_rows_the_database_refuses_for_good_are_set_aside_alone(
        engine: agts.StorageEngine, tmp_path: Path) -> None:
    """A row refused by a constraint (not an outage) is kept in the spool's failed/ folder for a
    person, never replayed; the rows of its batch and the batches around it are stored."""
    with engine.db.connection() as conn:  # a rule the server enforces and agts does not check
        conn.execute("ALTER TABLE agts.metric_points ADD CONSTRAINT test_non_negative "
                     "CHECK (value >= 0)")
    with engine.ingestor(batch_size=10, flush_interval_ms=10_000, spool_dir=tmp_path) as ing:
        ing.put([point(i) for i in range(10)])
        ing.flush(timeout=30)
        ing.put([point(i) for i in range(10, 15)] + [agts.MetricPoint(T0, "lat", -1.0)]
                + [point(i) for i in range(15, 19)])
        ing.flush(timeout=30)
        ing.put([point(i) for i in range(20, 30)])
        ing.flush(timeout=30)
        stats = ing.stats()
    assert count(engine) == (29, 29, sum(range(19)) + sum(range(20, 30)))
    assert (stats.points_written, stats.errors, stats.spool_pending) == (29, 1, 0)
    assert (stats.failed_batches, stats.points_lost) == (1, 0)
    assert "test_non_negative" in (stats.last_error or "")
    failed = list((tmp_path / "failed").glob("*.arrow"))
    assert len(failed) == 1
    with pa.memory_map(str(failed[0])) as source:
        kept = pa.ipc.open_file(source).read_all()
    assert kept.column("value").to_pylist() == [-1.0]
    assert set(kept.column("metric_name").to_pylist()) == {"lat"}
    with engine.ingestor(spool_dir=tmp_path) as again:  # the next ingestor does not replay it
        again.flush(timeout=30)
        assert again.stats().replayed_batches == 0
    assert count(engine)[0] == 29 and failed[0].exists()


def _allow_connections(config: StorageConfig, allow: bool) -> None:
    admin = config.with_overrides(database={"database": "postgres"})
    name = config.database.database
    with psycopg.connect(conninfo(admin.database), autocommit=True) as conn:
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


def _spool_file(directory: Path, points: list[agts.MetricPoint]) -> Path:
    """A real spool file, written the way an ingestor writes one during an outage."""
    from agts.ingest._normalize import normalize
    from agts.ingest._spool import Spool

    spool = Spool(directory, max_bytes=1 << 30)
    try:
        return spool.append(normalize(points), str(uuid.uuid4()))
    finally:
        spool.close()


def _spool_table(table: pa.Table, path: Path) -> None:
    meta = {b"agts.batch_id": str(uuid.uuid4()).encode()}
    table = table.replace_schema_metadata(meta)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)


def _dictionary(values: list[str], keys: list[int]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(keys, pa.int32()), pa.array(values), safe=False)


@pytest.mark.parametrize("damage", ["empty", "text", "cut-in-half", "foreign-arrow",
                                    "time-as-text", "time-as-integers", "key-outside-series"])
def test_an_unreadable_spool_file_is_set_aside_and_the_rest_is_stored(
        engine: agts.StorageEngine, tmp_path: Path, damage: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A spool file that cannot be read back no longer stops the flusher: it goes to failed/,
    is counted, and the good spool files after it and the new points are all stored."""
    spool = tmp_path / "spool"
    bad = _spool_file(spool, [point(i, "first") for i in range(40)])
    good = _spool_file(spool, [point(i, "second") for i in range(30)])
    assert bad.name < good.name
    if damage == "empty":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_bytes(b"16 bytes of text")
    elif damage == "cut-in-half":
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    elif damage == "foreign-arrow":  # a valid Arrow IPC file that is not a spooled batch
        with pa.OSFile(str(bad), "wb") as sink, pa.ipc.new_file(sink, pa.schema([("x", pa.int8())])) as w:
            w.write_table(pa.table({"x": pa.array([1], pa.int8())}))
    else:  # the spool's column names, other types or keys: refused, not stored as 1970 points
        times = (pa.array(["2026-01-01"]) if damage == "time-as-text"
                 else pa.array([1], pa.int64()) if damage == "time-as-integers"
                 else pa.array([T0], pa.timestamp("us", tz="UTC")))
        key = [5] if damage == "key-outside-series" else [0]
        _spool_table(pa.table({"time": times, "metric_name": _dictionary(["first"], key),
                               "labels": _dictionary(["{}"], key), "value": [1.0]}), bad)
    with engine.ingestor(batch_size=100, flush_interval_ms=20, spool_dir=spool) as ing:
        ing.put([point(i) for i in range(500)])
        ing.flush(timeout=30)
        stats = ing.stats()
    with engine.db.connection() as conn:
        stored = dict(conn.execute("SELECT s.metric_name, count(*) FROM agts.metric_points p "
                                   "JOIN agts.series s USING (series_id) GROUP BY 1").fetchall())
    assert stored == {"lat": 500, "second": 30}
    assert stats.failed_batches == 1 and stats.errors >= 1 and stats.points_lost == 0
    assert stats.spool_pending == 0 and stats.replayed_batches == 1
    assert (spool / "failed" / bad.name).exists() and not bad.exists()
    assert any(bad.name in r.getMessage() and "cannot be read" in r.getMessage()
               for r in caplog.records)


def test_a_stray_file_in_the_spool_is_ignored_with_a_warning(
        engine: agts.StorageEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "backup.arrow").write_bytes(b"not ours")
    (tmp_path / "notes.txt").write_text("a person's notes")
    with engine.ingestor(batch_size=10, flush_interval_ms=20, spool_dir=tmp_path) as ing:
        ing.put([point(i) for i in range(25)])
        ing.flush(timeout=30)
        assert ing.stats().failed_batches == 0
    assert count(engine)[0] == 25
    assert (tmp_path / "backup.arrow").read_bytes() == b"not ours"
    assert (tmp_path / "notes.txt").exists()
    assert any("backup.arrow" in r.getMessage() and r.levelname == "WARNING"
               for r in caplog.records)


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_an_unusable_spool_directory_is_refused_at_once(
        engine: agts.StorageEngine, tmp_path: Path, kind: str) -> None:
    if kind == "file":
        where = tmp_path / "spool"
        where.write_text("a file, not a directory")
    else:
        where = tmp_path / "ro"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        with pytest.raises(agts.StorageError, match=f"spool directory '{where}' cannot be used"):
            engine.ingestor(spool_dir=where)
    finally:
        if kind == "read-only":
            subprocess.run(["umount", "-l", str(where)], check=False)


def test_points_that_cannot_be_stored_or_kept_make_flush_and_close_raise(
        engine: agts.StorageEngine, tmp_path: Path) -> None:
    """The database refuses a batch for good and failed/ cannot be created (a file is in its
    place): the points are lost, and flush() and close() say so instead of returning."""
    with engine.db.connection() as conn:
        conn.execute("ALTER TABLE agts.metric_points ADD CONSTRAINT test_non_negative "
                     "CHECK (value >= 0)")
    (tmp_path / "failed").write_text("in the way")
    ing = engine.ingestor(batch_size=10, flush_interval_ms=10, spool_dir=tmp_path)
    ing.put([point(i) for i in range(9)] + [agts.MetricPoint(T0, "lat", -1.0)])
    with pytest.raises(agts.StorageError, match=r"1 accepted points could not be stored"):
        ing.flush(timeout=30)
    stats = ing.stats()
    assert (stats.points_written, stats.points_lost, stats.failed_batches) == (9, 1, 0)
    assert "test_non_negative" in (stats.last_error or "")
    ing.flush(timeout=30)  # reported once
    ing.put([agts.MetricPoint(T0 + dt.timedelta(seconds=1), "lat", -2.0)])
    with pytest.raises(agts.StorageError, match=r"1 accepted points could not be stored"):
        ing.close(timeout=30)
    assert count(engine)[0] == 9


def test_the_ingestor_stores_a_long_label_set_with_the_points_around_it(
        engine: agts.StorageEngine, tmp_path: Path) -> None:
    """300 points, one with a 3,000-character label value, 300 more: all 601 are stored (a b-tree
    key on labels sent the whole batch to failed/ with 0 rows stored)."""
    long_value = "".join(random.Random(7).choices(string.ascii_letters, k=3000))
    points = [point(i) for i in range(300)]
    points.append(agts.MetricPoint(T0, "lat", 1.0, {"note": long_value}))
    points += [point(i) for i in range(300, 600)]
    with engine.ingestor(batch_size=1000, flush_interval_ms=20, spool_dir=tmp_path) as ing:
        ing.put(points)
        ing.flush(timeout=30)
        stats = ing.stats()
    assert count(engine)[0] == 601
    assert (stats.points_written, stats.failed_batches, stats.errors) == (601, 0, 0)
    assert not (tmp_path / "failed").exists()


def test_spool_files_keep_their_order_past_twelve_digits(engine: agts.StorageEngine,
                                                         tmp_path: Path) -> None:
    """Sequence numbers are numbers: after 999999999999 comes 1000000000000, which sorts before
    it as text and did not match a 12-digit name pattern (it was never replayed)."""
    good = _spool_file(tmp_path, [point(i, "old") for i in range(10)])
    last = good.rename(tmp_path / ("999999999999-" + good.name.split("-", 1)[1]))
    (tmp_path / "000000000012-00000000-0000-4000-8000-000000000000.tmp").mkdir()  # a directory
    from agts.ingest._normalize import normalize
    from agts.ingest._spool import Spool

    spool = Spool(tmp_path, max_bytes=1 << 30)
    try:
        newer = spool.append(normalize([point(i, "new") for i in range(20)]), str(uuid.uuid4()))
    finally:
        spool.close()
    assert newer.name.startswith("1000000000000-")
    ing = engine.ingestor(spool_dir=tmp_path)
    ing.close(timeout=60)  # replays what the spool holds
    assert ing.stats().replayed_batches == 2
    assert not last.exists() and not newer.exists()
    with engine.db.connection() as conn:
        assert dict(conn.execute("SELECT s.metric_name, count(*) FROM agts.metric_points p JOIN "
                                 "agts.series s USING (series_id) GROUP BY 1").fetchall()) == {
            "old": 10, "new": 20}


def test_many_refused_rows_are_narrowed_down_exactly(engine: agts.StorageEngine,
                                                     tmp_path: Path) -> None:
    """100 refused rows among 1,000: the 900 others are stored and failed/ holds the 100 (a cap
    of 64 halvings left 774 good rows in failed/)."""
    with engine.db.connection() as conn:
        conn.execute("ALTER TABLE agts.metric_points ADD CONSTRAINT test_non_negative "
                     "CHECK (value >= 0)")
    rows = [agts.MetricPoint(T0 + dt.timedelta(milliseconds=i), "lat",
                             -1.0 if i % 10 == 3 else float(i), {"venue": "x"}) for i in range(1000)]
    with engine.ingestor(batch_size=1000, flush_interval_ms=10, spool_dir=tmp_path) as ing:
        ing.put(rows)
        ing.flush(timeout=120)
        stats = ing.stats()
    assert count(engine)[0] == 900 and stats.points_written == 900
    kept = [pa.ipc.open_file(pa.memory_map(str(f))).read_all()
            for f in (tmp_path / "failed").glob("*.arrow")]
    assert sorted(v for t in kept for v in t.column("value").to_pylist()) == [-1.0] * 100
    assert stats.failed_batches == len(kept) and stats.points_lost == 0


def test_a_lone_surrogate_is_refused_at_the_door(engine: agts.StorageEngine,
                                                 tmp_path: Path) -> None:
    """Python strings may hold lone surrogates, which no database text can: refused per row (it
    made the whole batch lost in the flusher, or a raw UnicodeEncodeError)."""
    bad = [agts.MetricPoint(T0, "lat\ud800", 1.0), agts.MetricPoint(T0, "lat", 1.0, {"k": "\udc00"})]
    for point_ in bad:
        with pytest.raises(agts.ValidationError, match="not valid Unicode text|valid Unicode text"):
            engine.insert_metrics_batch([point(0), point_])
    result = engine.insert_metrics_batch([point(0), *bad, point(1)], on_error="skip")
    assert (result.rows_written, result.skipped.get_column("row").to_list()) == (2, [1, 2])
    with engine.ingestor(spool_dir=tmp_path, on_error="skip") as ing:
        skipped = ing.put([point(2), bad[0], point(3)])
        ing.flush(timeout=30)
    assert skipped.get_column("row").to_list() == [1] and count(engine)[0] == 4


def test_a_statement_timeout_does_not_stall_the_pipeline(config: StorageConfig,
                                                         tmp_path: Path) -> None:
    """Every write times out while another session holds the table: the batch is halved a few
    times, then spooled, and stored once the table is free (it was retried and spooled forever
    as if the database were away, with flush() returning OK and nothing stored)."""
    slow = config.with_overrides(database={"statement_timeout_sec": 0.3})
    with agts.connect(slow) as engine:
        engine.insert_metrics_batch([point(0)])
        ing = engine.ingestor(batch_size=400, flush_interval_ms=10, spool_dir=tmp_path)
        with points_locked(engine):
            ing.put([point(i) for i in range(1, 401)])
            wait_until(lambda: ing.stats().spooled_batches >= 1, 60)
        ing.flush(timeout=60)
        wait_until(lambda: ing.stats().spool_pending == 0, 60)
        stats = ing.stats()
        ing.close(timeout=60)
        assert count(engine) == (401, 401, sum(range(401)))
    assert stats.points_lost == 0 and stats.failed_batches == 0
