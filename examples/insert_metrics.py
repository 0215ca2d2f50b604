"""Insert metric points: one at a time, in batches (dataclasses or frames), and safely retried.

Runs in a temporary database of its own on the configured server (``$AGTS_DSN``, a config
file, or the local default of ``agts local start``), created here and dropped at the end:
nothing in your databases is read or changed.

Run: ``python examples/insert_metrics.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import polars as pl

import agts

START = datetime(2026, 4, 1, 9, 30, tzinfo=UTC)

with agts.temporary_database() as config, agts.connect(config, migrate=True) as engine:
    # One point, as in the seed API (prefer batches: each call is a round trip).
    engine.insert_metric(agts.MetricPoint(START, "order_latency_ms", 3.2,
                                          {"venue": "binance", "endpoint": "place_order"}))

    # A batch of dataclasses...
    points = [
        agts.MetricPoint(START + timedelta(seconds=i), "order_latency_ms", 3.0 + (i % 7) * 0.4,
                         {"venue": "binance", "endpoint": "place_order"})
        for i in range(1, 1_000)
    ]
    result = engine.insert_metrics_batch(points)
    print(f"dataclasses: {result.rows_written} written, {result.duplicates} duplicates")

    # ...or a frame (Polars, pandas or pyarrow); labels as a struct column, a map or JSON text.
    frame = pl.DataFrame({
        "timestamp": [START + timedelta(milliseconds=250 * i) for i in range(20_000)],
        "metric_name": "queue_depth",
        "value": [float(i % 50) for i in range(20_000)],
        "labels": [{"venue": "okx", "side": "bid" if i % 2 else "ask"} for i in range(20_000)],
    })
    batch_id = uuid.uuid4()  # keep it to retry safely after a timeout
    result = engine.insert_metrics_batch(frame, batch_id=batch_id)
    print(f"frame: {result.rows_written} written in batch {result.batch_id}")

    # Sending the same batch again (a retry) stores nothing twice.
    again = engine.insert_metrics_batch(frame, batch_id=batch_id)
    print(f"retry: {again.rows_written} written, already ingested: {again.already_ingested}")

    # Invalid rows: refuse the batch (default) or store the valid rows and get the others back.
    bad = pl.DataFrame({"timestamp": [START, START], "metric_name": ["pnl_usd", "pnl_usd"],
                        "value": [12.5, float("nan")]})
    try:
        engine.insert_metrics_batch(bad)
    except agts.ValidationError as exc:
        print(f"refused: {exc}")
    skipped = engine.insert_metrics_batch(bad, on_error="skip").skipped
    print(f"skip mode stored 1 point and returned {skipped.height} row: {skipped['error'][0]}")
