"""The buffered ingest pipeline: producers in threads and asyncio, backpressure, statistics.

Runs in a temporary database of its own on the configured server (``$AGTS_DSN``, a config
file, or the local default of ``agts local start``), created here and dropped at the end:
nothing in your databases is read or changed.

Run: ``python examples/pipeline_backpressure.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from datetime import UTC, datetime, timedelta

import agts

START = datetime(2026, 4, 4, tzinfo=UTC)
PER_PRODUCER = 20_000


def produce(ingestor: agts.Ingestor, venue: str) -> None:
    """A monitor thread handing over what it measured every tick (a list per put: each put
    validates its points at once, so lists are far cheaper per point than single points)."""
    for tick in range(0, PER_PRODUCER, 200):
        ingestor.put([agts.MetricPoint(START + timedelta(milliseconds=tick + k),
                                       "order_latency_ms", 2.0 + k % 11, {"venue": venue})
                      for k in range(200)])


async def produce_async(ingestor: agts.Ingestor) -> None:
    """An asyncio task: aput never blocks the event loop while it waits for room."""
    for i in range(0, PER_PRODUCER, 500):
        batch = [agts.MetricPoint(START + timedelta(milliseconds=i + k), "order_latency_ms",
                                  1.5, {"venue": "async"}) for k in range(500)]
        await ingestor.aput(batch)


with (
    agts.temporary_database() as config,
    agts.connect(config, migrate=True) as engine,
    tempfile.TemporaryDirectory(prefix="agts-spool-") as spool,  # batches wait here if the
):                                                               # database is away
    # "block": a full buffer makes producers wait (up to backpressure_timeout_sec), so a slow
    # database slows the producers down instead of growing memory without bound.
    with engine.ingestor(batch_size=5_000, max_buffer_size=20_000, backpressure="block",
                         spool_dir=spool) as ingestor:
        threads = [threading.Thread(target=produce, args=(ingestor, v)) for v in ("a", "b")]
        for t in threads:
            t.start()
        asyncio.run(produce_async(ingestor))
        for t in threads:
            t.join()
        ingestor.flush()
        stats = ingestor.stats()
    print(f"accepted {stats.points_accepted}, written {stats.points_written} in "
          f"{stats.batches_written} batches, {stats.points_per_second:,.0f} points/s, "
          f"lag {stats.lag_seconds:.3f} s, spooled {stats.spooled_batches}")

    # "raise": producers get BackpressureError at once and decide themselves (shed, retry...).
    with engine.ingestor(max_buffer_size=1_000, backpressure="raise", spool_dir=spool) as strict:
        try:
            strict.put([agts.MetricPoint(START, "queue_depth", 1.0, {"venue": "x"})] * 5_000)
        except agts.BackpressureError as exc:
            print("backpressure:", exc)

    # The pipeline's own health, stored next to the metrics it describes.
    engine.insert_metrics_batch(stats.as_points(labels={"service": "example"}))
    counted = engine.query_aggregated("order_latency_ms", START, START + timedelta(minutes=1),
                                      "1m", "count", group_by=["venue"])
    print(counted)
