"""Deterministic metric points for the query tests, and an independent reference computation.

The reference works on the frame the test inserted (not on anything read back through agts):
buckets by integer arithmetic on epoch microseconds, aggregations by Polars.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import psycopg

import agts
from agts.db import conninfo

T0 = datetime(2024, 3, 9, 22, 0, tzinfo=UTC)  # the range crosses UTC midnight (and a US DST date)
SPAN = timedelta(hours=4)

SERIES = [
    ("lat", {"venue": "binance", "market": "BTC"}),
    ("lat", {"venue": "okx", "market": "BTC"}),
    ("lat", {"venue": "okx", "market": "ETH"}),
    ("lat", {"region": "eu"}),
    ("fill_rate", {"venue": "binance"}),
    ("it's; DROP TABLE x; --\"é", {"k'ey": "v;al\"ü"}),
]


def points(seed: int = 7, per_series: int = 400, start: datetime = T0,
           span: timedelta = SPAN) -> pl.DataFrame:
    """Irregular, distinct microsecond timestamps per series; values with a large offset (so a
    naive sum of squares would lose the variance) plus noise."""
    rng = np.random.default_rng(seed)
    frames = []
    span_us = span // timedelta(microseconds=1)
    base = (start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    for i, (name, labels) in enumerate(SERIES):
        offsets = np.sort(rng.choice(span_us, size=per_series, replace=False))
        values = 1_000_000.0 + i * 10 + rng.normal(0, 3, size=per_series).round(6)
        frames.append(pl.DataFrame({
            "timestamp": pl.Series(base + offsets).cast(pl.Datetime("us", "UTC")),
            "metric_name": [name] * per_series,
            "value": values,
            "labels": [labels] * per_series,
        }))
    return pl.concat(frames, how="diagonal_relaxed")


def insert(engine: agts.StorageEngine, frame: pl.DataFrame) -> None:
    engine.insert_metrics_batch(frame)


def select(frame: pl.DataFrame, metric: str, start: datetime, end: datetime,
           labels: dict[str, str] | None = None) -> pl.DataFrame:
    out = frame.filter((pl.col("metric_name") == metric) & (pl.col("timestamp") >= start)
                       & (pl.col("timestamp") < end))
    for key, value in (labels or {}).items():
        out = out.filter(pl.col("labels").struct.field(key) == value)
    return out


def reference(
    frame: pl.DataFrame, metric: str, start: datetime, end: datetime, bucket: timedelta,
    aggs: list[str], *, labels: dict[str, str] | None = None, group_by: list[str] | None = None,
) -> pl.DataFrame:
    rows = select(frame, metric, start, end, labels)
    step = bucket // timedelta(microseconds=1)
    keys = group_by or []
    rows = rows.with_columns(
        (pl.col("timestamp").cast(pl.Int64) // step * step).cast(pl.Datetime("us", "UTC"))
        .alias("b"),
        *(pl.col("labels").struct.field(k).alias(k) for k in keys),
    ).sort("timestamp")
    exprs = []
    for name in aggs:
        v = pl.col("value")
        expr = {"avg": v.mean(), "min": v.min(), "max": v.max(), "sum": v.sum(),
                "count": v.len().cast(pl.Int64), "first": v.first(), "last": v.last(),
                "stddev": v.std(ddof=1), "median": v.quantile(0.5, "linear")}.get(name)
        if expr is None:
            expr = v.quantile(float(name[1:]) / 100, "linear")
        exprs.append(expr.alias(name))
    out = rows.group_by(["b", *keys], maintain_order=True).agg(exprs)
    return out.rename({"b": "timestamp"}).sort(["timestamp", *keys], nulls_last=True)


def assert_close(actual: pl.DataFrame, expected: pl.DataFrame, *, rel: float = 1e-9) -> None:
    """Same columns, dtypes of keys, rows; floats equal to ``rel`` (sum order differs by path)."""
    assert actual.columns == expected.columns
    assert actual.height == expected.height, (actual, expected)
    for col in actual.columns:
        a, e = actual.get_column(col), expected.get_column(col)
        if a.dtype == pl.Float64:
            assert a.is_null().to_list() == e.is_null().to_list(), col
            av = a.drop_nulls().to_numpy()
            ev = e.cast(pl.Float64).drop_nulls().to_numpy()
            # stddev of ~3 around 1e6: rounding in m2 combination is relative to the mean
            tol = rel * np.maximum(np.abs(ev), 1.0) + (1e-6 if col == "stddev" else 0.0)
            assert np.all(np.abs(av - ev) <= tol), (col, av - ev)
        else:
            assert a.to_list() == e.cast(a.dtype).to_list(), col


def open_batch(engine: agts.StorageEngine, at: datetime, value: float,
               began: timedelta) -> psycopg.Connection:
    """A batch written as agts' writer does (ledger row + points, one transaction), whose
    transaction began ``began`` ago and is still open: the caller commits it."""
    conn = psycopg.connect(conninfo(engine.config.database))
    row = conn.execute("SELECT series_id FROM agts.series WHERE metric_name = 'lat' AND labels = "
                       """'{"venue": "okx", "market": "BTC"}'""").fetchone()
    assert row is not None
    conn.execute("INSERT INTO agts.ingest_batches (batch_id, rows, min_time, max_time, "
                 "ingested_at) VALUES (%s, 1, %s, %s, now() - %s)", (uuid.uuid4(), at, at, began))
    conn.execute("INSERT INTO agts.metric_points (time, series_id, value) VALUES (%s, %s, %s)",
                 (at, row[0], value))
    return conn

