"""Query metrics: raw ranges, time buckets with percentiles, several metrics, pages, streams.

Runs in a temporary database of its own on the configured server (``$AGTS_DSN``, a config
file, or the local default of ``agts local start``), created here and dropped at the end:
nothing in your databases is read or changed. It first stores a small sample there.

Run: ``python examples/query_data.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

import agts
from agts.sample import trading_day

START = datetime(2026, 4, 2, tzinfo=UTC)
END = START + timedelta(hours=6)

with agts.temporary_database() as config, agts.connect(config, migrate=True) as engine:
    day = trading_day(seed=1, points=60_000, orders=100, start=START, hours=6)
    engine.insert_metrics_batch(day.metrics)

    # Raw points of one series: exact label match, half-open range [start, end).
    raw = engine.query_metrics("latency_ms", START, START + timedelta(minutes=5),
                               {"venue": "binance", "endpoint": "place_order"})
    print(raw.head(3))
    print("labels are a struct:", raw.schema["labels"])

    # Buckets: any of avg/min/max/sum/count/first/last/stddev/median/pNN, grouped by labels.
    hourly = engine.query_aggregated("latency_ms", START, END, "1h", ["avg", "p50", "p99"],
                                     group_by=["venue"])
    print(hourly)

    # Several metrics aligned on time, one column each.
    wide = engine.query_metrics_multi(["fill_rate", "queue_depth"], START, END, bucket="30m",
                                      aggregation="avg", shape="wide")
    print(wide.head())

    # Rollups make long-range aggregates cheap; queries are exact with or without a refresh.
    engine.refresh_rollups()
    per_minute = engine.query_aggregated("price_mid", START, END, "1m", ["first", "last"],
                                         labels_in={"market": ["BTC-USD"]}, group_by=["venue"])
    print(f"{per_minute.height} one-minute BTC-USD bars from the rollup")

    # Past query.max_results rows, page with a keyset cursor (services)...
    pages, cursor = 0, None
    while True:
        page = engine.query_metrics("queue_depth", START, END, limit=5_000, after=cursor)
        if page.height == 0:
            break
        pages, cursor = pages + 1, agts.next_cursor(page)
    print(f"queue_depth in {pages} pages")

    # ...or stream bounded frames (notebooks, jobs).
    total = sum(f.height for f in engine.query_metrics("queue_depth", START, END,
                                                       iter_batches=True, batch_size=4_000))
    print(f"queue_depth streamed: {total} points")

    try:
        engine.query_metrics("queue_depth", START, END)
    except agts.ResultTooLargeError as exc:
        print(f"too large without paging: {str(exc)[:60]}...")

    with pl.Config(tbl_cols=-1, tbl_width_chars=200, float_precision=1):
        print(engine.query_stats())
