"""asyncio callers: every query awaitable through engine.aio / store.aio, the event loop never
blocked (a timer task keeps ticking), calls in flight bounded, the same engine serving both."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
import uuid

import polars as pl
import psycopg
import pytest

import agts
from agts.db import conninfo

T0 = dt.datetime(2025, 9, 1, tzinfo=dt.UTC)


@pytest.fixture
def stored(engine: agts.StorageEngine) -> agts.ExecutionStore:
    engine.insert_metrics_batch([agts.MetricPoint(T0 + dt.timedelta(seconds=i), "lat", float(i),
                                                  {"venue": "okx"}) for i in range(600)])
    store = agts.ExecutionStore(engine)
    store.store_order(agts.Order(uuid.UUID(int=1), T0, "okx", "BTC-USD", "buy", "market", None,
                                 1.0, "new", "aio-1"))
    store.store_fill(agts.Fill(uuid.UUID(int=2), T0 + dt.timedelta(seconds=1), uuid.UUID(int=1),
                               "okx", "BTC-USD", "buy", 100.0, 0.5, 0.1, "USD"))
    return store


def test_every_kind_of_query_is_awaitable_and_equals_the_sync_answer(
        engine: agts.StorageEngine, stored: agts.ExecutionStore) -> None:
    end = T0 + dt.timedelta(hours=1)

    async def main() -> dict[str, object]:
        results = await asyncio.gather(
            engine.aio.query_metrics("lat", T0, end),
            engine.aio.query_aggregated("lat", T0, end, "1m", ["avg", "p99"]),
            engine.aio.query_metrics_multi(["lat"], T0, end, bucket="5m", aggregation="max"),
            engine.aio.latest("lat"),
            engine.aio.series("lat"),
            engine.aio.label_values("venue"),
            stored.aio.query_fills(T0, end),
            stored.aio.query_orders(T0, end),
            stored.aio.order_state(uuid.UUID(int=1)))
        batches = [part async for part in await engine.aio.query_metrics(
            "lat", T0, end, iter_batches=True, batch_size=250)]
        return {"results": results, "batches": batches, "edition": engine.aio.server.edition}

    out = asyncio.run(main())
    raw, agg_, multi, latest, series, values, fills, orders, state = out["results"]  # type: ignore[misc]
    assert raw.equals(engine.query_metrics("lat", T0, end))
    assert agg_.equals(engine.query_aggregated("lat", T0, end, "1m", ["avg", "p99"]))
    assert multi.height == 2 and latest["value"].to_list() == [599.0]
    assert series.height == 1 and values["value"].to_list() == ["okx"]
    assert fills.height == 1 and orders.height == 1 and state.filled_size == 0.5
    assert [b.height for b in out["batches"]] == [250, 250, 100]  # type: ignore[attr-defined]
    assert pl.concat(out["batches"]).equals(raw)  # type: ignore[arg-type]
    assert out["edition"] == engine.server.edition  # attributes come through as they are


def test_queries_run_concurrently_without_blocking_the_loop_and_bounded(
        config: agts.StorageConfig, stored: agts.ExecutionStore) -> None:
    """Six queries wait on a lock another session holds for 1.5 s: a 10 ms timer keeps ticking,
    they finish together once the lock goes, and at most ``max_connections`` wait at once."""
    small = config.with_overrides(database={"max_connections": 3})

    async def main(engine: agts.StorageEngine) -> tuple[int, float, int]:
        ticks = 0
        stop = asyncio.Event()

        async def timer() -> None:
            nonlocal ticks
            while not stop.is_set():
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(timer())
        began = time.monotonic()
        frames = await asyncio.gather(*[engine.aio.query_metrics(
            "lat", T0, T0 + dt.timedelta(hours=1)) for _ in range(6)])
        elapsed = time.monotonic() - began
        stop.set()
        await ticker
        assert all(f.height == 600 for f in frames)
        return ticks, elapsed, peak[0]

    peak = [0]
    with psycopg.connect(conninfo(config.database)) as locker:
        locker.execute("LOCK TABLE agts.metric_points IN ACCESS EXCLUSIVE MODE")
        watching = threading.Event()

        def watch() -> None:  # how many of the test database's sessions wait on the lock
            with psycopg.connect(conninfo(config.database), autocommit=True) as conn:
                while not watching.is_set():
                    row = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock'").fetchone()
                    peak[0] = max(peak[0], int(row[0]) if row else 0)
                    time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        release = threading.Timer(1.5, locker.rollback)
        release.start()
        with agts.connect(small) as engine:
            ticks, elapsed, waiting = asyncio.run(main(engine))
        watching.set()
        watcher.join(5)
    assert ticks >= 80, f"the event loop was blocked: {ticks} ticks in {elapsed:.2f}s"
    assert 1.4 <= elapsed < 6  # together after the lock, not one after another
    assert 1 <= waiting <= 3  # bounded by database.max_connections


def test_the_same_engine_serves_sync_and_async_callers(engine: agts.StorageEngine,
                                                      stored: agts.ExecutionStore) -> None:
    async def main() -> list[int]:
        sync = asyncio.to_thread(lambda: engine.query_metrics("lat", T0, T0 + dt.timedelta(1)).height)
        together = await asyncio.gather(sync, engine.aio.query_metrics(
            "lat", T0, T0 + dt.timedelta(1)), return_exceptions=False)
        return [together[0], together[1].height]

    assert asyncio.run(main()) == [600, 600]
    with pytest.raises(AttributeError):
        engine.aio._queries  # private names are not offered  # noqa: B018
    with pytest.raises(agts.ValidationError, match="tiers must be one of"):
        asyncio.run(engine.aio.query_metrics("lat", T0, T0, tiers="nope"))
