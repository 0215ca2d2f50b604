"""Read replicas, on a real streaming replica of a private cluster (``pg_basebackup -R`` on
loopback): queries read it, writes never do; a lagging, stopped or failing replica is skipped and
the primary answers; the query cache never serves what the primary's state already invalidated.

The replica's replay is paused (``pg_wal_replay_pause()``) to tell the servers apart: rows written
after the pause exist on the primary only, so an answer without them came from the replica."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts
from agts.db import _local
from tests.reliability.conftest import Cluster, StreamingReplica, free_port, wait_for
from tests.test_cli import run_cli

pytestmark = pytest.mark.slow  # a second server, stopped and started

NOW = datetime.now(UTC).replace(microsecond=0)
RECENT = NOW - timedelta(minutes=30)  # open ranges (not cached): [RECENT, NOW + 1 day)
OPEN = (RECENT, NOW + timedelta(days=1))
OLD = datetime(2025, 3, 1, tzinfo=UTC)  # a closed range (cached): [OLD, OLD + 1 day)
CLOSED = (OLD, OLD + timedelta(days=1))


@pytest.fixture(scope="module")
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, StreamingReplica]]:
    status = _local.status()
    if not (status.bindir and status.timescaledb_installed):
        pytest.skip("a streaming replica needs PostgreSQL with TimescaleDB on this machine to run "
                    "a private primary and its replica (agts local start installs one)")
    cluster: Cluster = request.getfixturevalue("cluster")
    replica = StreamingReplica(cluster, cluster.directory.with_name(
        cluster.directory.name + "-replica"), free_port())
    try:
        replica.create()
        replica.start()
        yield cluster, replica
    finally:
        replica.stop("immediate")
        shutil.rmtree(replica.directory, ignore_errors=True)


def _config(pair: tuple[Cluster, StreamingReplica], **database: Any) -> agts.StorageConfig:
    cluster, replica = pair
    settings = {"replicas": [f"127.0.0.1:{replica.port}"], "replica_check_interval_sec": 0.05,
                "replica_max_lag_sec": 3600, **database}
    return cluster.config(**settings)


def _points(metric: str, start: datetime, n: int, *, base: float = 0.0,
            hosts: int = 2) -> pl.DataFrame:
    return pl.DataFrame({
        "timestamp": [start + timedelta(seconds=i) for i in range(n) for _ in range(hosts)],
        "metric_name": metric,
        "value": [base + i for i in range(n) for _ in range(hosts)],
        "labels": [f'{{"host": "h{h}"}}' for _ in range(n) for h in range(hosts)],
    })


def _fills(start: datetime, n: int, venue: str) -> list[agts.Fill]:
    import uuid

    order = agts.Order(id=uuid.uuid4(), timestamp=start, venue=venue, market="BTC-USD",
                       side="buy", order_type="limit", price=100.0, size=float(n), status="new",
                       client_order_id=f"c-{uuid.uuid4().hex[:8]}")
    return [order] + [agts.Fill(id=uuid.uuid4(), order_id=order.id,  # type: ignore[list-item]
                                timestamp=start + timedelta(seconds=i + 1), venue=venue,
                                market="BTC-USD", side="buy", price=100.0, size=1.0, fee=0.01,
                                fee_currency="USD")
                      for i in range(n)]


def _store(store: agts.ExecutionStore, records: list[Any]) -> None:
    store.store_order(records[0])
    store.store_fills(records[1:])


def _answers(engine: agts.StorageEngine, store: agts.ExecutionStore, metric: str,
             venue: str) -> dict[str, pl.DataFrame]:
    """What a dashboard asks, over the open range (never cached)."""
    return {
        "raw": engine.query_metrics(metric, *OPEN),
        "aggregated": engine.query_aggregated(metric, *OPEN, "1m", ["count", "max"]),
        "multi": engine.query_metrics_multi([metric], *OPEN, bucket="1m", aggregation="count"),
        "latest": engine.latest(metric),
        "series": engine.series(metric).select("series_id", "metric_name", "labels"),
        "label_values": engine.label_values("host", metric),
        "fills": store.query_fills(*OPEN, venue=venue),
    }


def test_reads_go_to_the_replica_and_writes_to_the_primary(
        pair: tuple[Cluster, StreamingReplica]) -> None:
    cluster, replica = pair
    with agts.connect(_config(pair)) as engine:
        store = agts.ExecutionStore(engine)
        engine.insert_metrics_batch(_points("rr_a", RECENT, 60))
        _store(store, _fills(RECENT, 3, "rr-venue"))
        replica.caught_up()
        replica.pause()
        try:
            # Writes reach the primary while reads are routed: the replica is read-only.
            engine.insert_metrics_batch(_points("rr_a", RECENT + timedelta(minutes=1), 60,
                                                base=1000, hosts=3))
            _store(store, _fills(RECENT + timedelta(minutes=5), 2, "rr-venue"))
            seen = _answers(engine, store, "rr_a", "rr-venue")
            with engine.reads_on_primary():
                primary = _answers(engine, store, "rr_a", "rr-venue")
            assert seen["raw"].height == 120 and primary["raw"].height == 120 + 180
            assert seen["fills"].height == 3 and primary["fills"].height == 5
            assert seen["latest"].height == 2 and primary["latest"].height == 3
            assert seen["latest"].get_column("value").to_list() == [59.0, 59.0]
            assert seen["series"].height == 2 and primary["series"].height == 3
            assert seen["label_values"].get_column("value").to_list() == ["h0", "h1"]
            assert seen["aggregated"].get_column("count").sum() == 120
            assert seen["multi"].get_column("count").sum() == 120
            states = engine.replica_status()
            assert states.get_column("state").to_list() == ["ok"]
            assert states.get_column("replica").to_list() == [
                f"agts@127.0.0.1:{replica.port}/{cluster.config().database.database}"]
        finally:
            replica.resume()
        replica.caught_up()
        time.sleep(0.1)  # past the check interval: the lag is measured again
        after = _answers(engine, store, "rr_a", "rr-venue")
        for name, frame in after.items():
            assert_frame_equal(frame, primary[name], check_row_order=name != "label_values")


def test_a_lagging_replica_is_skipped_until_it_catches_up(
        pair: tuple[Cluster, StreamingReplica]) -> None:
    _, replica = pair
    with agts.connect(_config(pair, replica_max_lag_sec=0.5)) as engine:
        engine.insert_metrics_batch(_points("lag_a", RECENT, 30))
        replica.caught_up()
        replica.pause()
        try:
            engine.insert_metrics_batch(_points("lag_a", RECENT + timedelta(minutes=1), 30))

            def lagging() -> bool:
                return engine.replica_status().get_column("state").to_list() == ["lagging"]

            wait_for(lagging, 10, "the replica to count as lagging")
            status = engine.replica_status().row(0, named=True)
            assert status["lag_sec"] > 0.5 and status["error"] is None
            # The replica lacks the second batch: the answer is the primary's.
            assert engine.query_metrics("lag_a", *OPEN).height == 120
            assert engine.latest("lag_a").get_column("value").to_list() == [29.0, 29.0]
        finally:
            replica.resume()
        replica.caught_up()
        wait_for(lambda: engine.replica_status().get_column("state").to_list() == ["ok"], 10,
                 "the replica to be fit again")
        assert engine.replica_status().get_column("lag_sec").to_list()[0] <= 0.5


def test_a_stopped_replica_falls_back_to_the_primary_and_is_used_again(
        pair: tuple[Cluster, StreamingReplica]) -> None:
    _, replica = pair
    # Checked once, at the first read: the router still believes the replica is up when it
    # stops, so the stop is found by a failing read.
    with agts.connect(_config(pair, replica_check_interval_sec=3600)) as engine:
        engine.insert_metrics_batch(_points("stop_a", RECENT, 40))
        replica.caught_up()
        before = engine.query_metrics("stop_a", *OPEN)
        assert before.height == 80
        replica.stop("immediate")
        try:
            engine.insert_metrics_batch(_points("stop_a", RECENT + timedelta(minutes=1), 10))
            began = time.monotonic()
            assert engine.query_metrics("stop_a", *OPEN).height == 100
            assert engine.query_aggregated("stop_a", *OPEN, "1h", "count").get_column(
                "count").to_list() == [100]
            assert time.monotonic() - began < 5
            status = engine.replica_status().row(0, named=True)
            assert status["state"] == "down"
            assert "replica" in status["error"] or "connect" in status["error"]
        finally:
            replica.start()
        replica.caught_up()
        # Tried again after its rest (1 s), and used.
        wait_for(lambda: engine.replica_status().get_column("state").to_list() == ["ok"], 15,
                 "the restarted replica to be fit again")


def test_a_replica_that_stops_mid_stream_hands_over_to_the_primary(
        pair: tuple[Cluster, StreamingReplica]) -> None:
    """A stream larger than the socket buffers: the replica dies after the first frame, and the
    primary goes on after the last row handed out — every row once, in order."""
    _, replica = pair
    start = datetime(2025, 5, 1, tzinfo=UTC)
    with agts.connect(_config(pair, replica_check_interval_sec=3600)) as engine:
        engine.insert_metrics_batch(_points("bulk", start, 100_000, hosts=4))
        replica.caught_up()
        span = (start, start + timedelta(days=2))
        with engine.reads_on_primary():
            expected = pl.concat(list(engine.query_metrics("bulk", *span, iter_batches=True,
                                                           batch_size=100_000)))
        assert expected.height == 400_000
        frames = []
        try:
            for i, frame in enumerate(engine.query_metrics("bulk", *span, iter_batches=True,
                                                            batch_size=20_000)):
                frames.append(frame)
                if i == 0:
                    replica.stop("immediate")
        finally:
            replica.start()
        assert len(frames) == 20
        got = pl.concat(frames)
        assert_frame_equal(got, expected)
        replica.caught_up()


def test_the_cache_never_serves_what_the_primary_invalidated(
        pair: tuple[Cluster, StreamingReplica]) -> None:
    """A closed range is cached; the replica is paused (but within its lag bound, so fit to
    serve open ranges). A late point written on the primary invalidates the cached frame, and
    the frame computed next must hold it: a replica that has not replayed the primary's WAL as of
    the cache's mark is not read for a frame to cache."""
    _, replica = pair
    with agts.connect(_config(pair)) as engine:
        engine.insert_metrics_batch(_points("cache_a", OLD, 50))
        replica.caught_up()
        first = engine.query_aggregated("cache_a", *CLOSED, "1h", ["count", "sum"])
        assert first.get_column("count").to_list() == [100]
        replica.pause()
        try:
            late = _points("cache_a", OLD + timedelta(hours=3), 1, base=500.0)
            engine.insert_metrics_batch(late)
            for _ in range(2):  # the miss, then the hit
                frame = engine.query_aggregated("cache_a", *CLOSED, "1h", ["count", "sum"])
                assert frame.get_column("count").to_list() == [100, 2]
                assert frame.get_column("sum").to_list()[1] == 1000.0
            raw = engine.query_metrics("cache_a", *CLOSED)
            assert raw.height == 102
            stats = engine.query_stats().filter(pl.col("kind") == "aggregated").row(0, named=True)
            assert stats["cache_hits"] >= 1
            # An open range may be answered by the (paused, but within its bound) replica.
            engine.insert_metrics_batch(_points("cache_b", RECENT, 5))
            assert engine.query_metrics("cache_b", *OPEN).height == 0
        finally:
            replica.resume()
        replica.caught_up()


def test_status_shows_the_replicas(pair: tuple[Cluster, StreamingReplica]) -> None:
    cluster, replica = pair
    dead = free_port()
    result = run_cli("status", "--json", config=cluster.config(), env_extra={
        "AGTS_DATABASE__REPLICAS": f"127.0.0.1:{replica.port}, 127.0.0.1:{dead}"})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    states = {r["replica"].rsplit("@", 1)[1].split("/")[0]: r for r in report["replicas"]}
    assert states[f"127.0.0.1:{replica.port}"]["state"] == "ok"
    assert states[f"127.0.0.1:{dead}"]["state"] == "down"
    assert cluster.password not in result.stdout + result.stderr
    text = run_cli("status", config=cluster.config(), env_extra={
        "AGTS_DATABASE__REPLICAS": f"127.0.0.1:{replica.port}"})
    assert text.returncode == 0, text.stderr
    assert "replicas" in text.stdout and f"127.0.0.1:{replica.port}" in text.stdout
