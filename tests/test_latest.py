"""Latest values (engine.latest), checked against Polars over the same points: late and
out-of-order points, duplicates, label filters, ``before``, archived ranges, retention."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 3, tzinfo=UTC)


def _points(seed: int, n: int = 3000, hosts: int = 30) -> pl.DataFrame:
    """Points of two metrics over two days, in random order, with repeated instants."""
    rng = np.random.default_rng(seed)
    offsets = rng.integers(0, 2 * 86_400, n) * 1_000_000
    return pl.DataFrame({
        "timestamp": pl.Series(int(T0.timestamp()) * 1_000_000 + offsets).cast(
            pl.Datetime("us", "UTC")),
        "metric_name": rng.choice(["cpu", "mem"], n),
        "value": rng.normal(50, 10, n),
        "host": [f"h{i}" for i in rng.integers(0, hosts, n)],
        "region": rng.choice(["eu", "us"], n),
    }).with_columns(labels=pl.struct("host", "region")).drop("host", "region")


def _expected(stored: pl.DataFrame, before: dt.datetime | None = None) -> pl.DataFrame:
    """Newest point per (metric, labels) by Polars, first write winning at the same instant."""
    rows = stored if before is None else stored.filter(pl.col("timestamp") <= before)
    return (rows.with_columns(pl.col("labels").struct.json_encode().alias("key"))
            .unique(["metric_name", "key", "timestamp"], keep="first", maintain_order=True)
            .sort("timestamp", maintain_order=True)
            .group_by("metric_name", "key", maintain_order=True).last()
            .select("metric_name", "key", "timestamp", "value")
            .sort("metric_name", "key"))


def _got(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("metric_name", pl.col("labels").struct.json_encode().alias("key"),
                        "timestamp", "value").sort("metric_name", "key")


def test_latest_equals_polars_under_late_out_of_order_and_repeated_points(
        engine: agts.StorageEngine) -> None:
    first = _points(1)
    engine.insert_metrics_batch(first.head(2000))
    engine.insert_metrics_batch(first.tail(1000))  # later batches with older points
    late = _points(2).with_columns(pl.col("timestamp") - dt.timedelta(days=1))
    engine.insert_metrics_batch(late)
    # The same instants again with other values: the first write wins, here and in the table.
    engine.insert_metrics_batch(first.with_columns(pl.col("value") + 1000), on_error="raise")
    stored = pl.concat([first.head(2000), first.tail(1000), late])
    got = engine.latest(["cpu", "mem"])
    assert got.columns == ["timestamp", "metric_name", "value", "labels", "series_id"]
    assert got.schema == engine.query_metrics("cpu", T0, T0).schema
    assert got.get_column("series_id").is_sorted()
    assert_frame_equal(_got(got), _expected(stored))
    at = T0 + dt.timedelta(hours=20)
    assert_frame_equal(_got(engine.latest(["cpu", "mem"], before=at)), _expected(stored, at))
    assert_frame_equal(_got(engine.latest("cpu", {"region": "eu"})),
                       _expected(stored).filter(pl.col("metric_name") == "cpu",
                                                pl.col("key").str.contains('"region":"eu"')))
    only = engine.latest("mem", labels_in={"host": ["h1", "h2"]})
    assert sorted(only["labels"].struct.field("host").unique().to_list()) == ["h1", "h2"]


def test_latest_of_nothing(engine: agts.StorageEngine) -> None:
    engine.insert_metrics_batch(_points(3, n=50))
    for frame in (engine.latest("nope"), engine.latest("cpu", {"host": "nobody"}),
                  engine.latest("cpu", before=T0 - dt.timedelta(days=9))):
        assert frame.height == 0
        assert frame.columns == ["timestamp", "metric_name", "value", "labels", "series_id"]
    with pytest.raises(agts.ValidationError, match="metric_name must be a non-empty string"):
        engine.latest("")
    with pytest.raises(agts.ValidationError, match="before must be a datetime"):
        engine.latest("cpu", before="soon")


def test_latest_sees_new_series_at_once(engine: agts.StorageEngine) -> None:
    """Series resolutions are cached by the series epoch: a series added (by another engine too)
    shows up in the next answer."""
    engine.insert_metrics_batch([agts.MetricPoint(T0, "cpu", 1.0, {"host": "a"})])
    assert engine.latest("cpu").height == 1
    with agts.connect(engine.config) as other:
        other.insert_metrics_batch([agts.MetricPoint(T0, "cpu", 2.0, {"host": "b"})])
    assert engine.latest("cpu")["value"].to_list() == [1.0, 2.0]
    engine.insert_metrics_batch([agts.MetricPoint(T0 + dt.timedelta(1), "cpu", 3.0, {"host": "a"})])
    assert engine.latest("cpu")["value"].to_list() == [3.0, 2.0]


def test_latest_across_archive_restore_and_retention(engine: agts.StorageEngine,
                                                     tmp_path: Path) -> None:
    """An archived point is still the newest of its series; ``before`` finds it in the cold
    tier; a restore keeps the answer; points deleted without an archive leave it."""
    points = _points(4)
    engine.insert_metrics_batch(points)
    day1 = T0.replace(hour=0)
    engine.archive("metrics", day1, day1 + dt.timedelta(days=2), drop=True, root=str(tmp_path))
    assert engine.query_metrics("cpu", day1, day1 + dt.timedelta(days=2)).height == 0
    assert_frame_equal(_got(engine.latest(["cpu", "mem"])), _expected(points))
    at = T0 + dt.timedelta(hours=30)
    assert_frame_equal(_got(engine.latest(["cpu", "mem"], before=at)), _expected(points, at))
    engine.restore("metrics", day1, day1 + dt.timedelta(days=2), root=str(tmp_path))
    assert_frame_equal(_got(engine.latest(["cpu", "mem"])), _expected(points))
    # Retention without an archive deletes the second day for good: the newest left counts.
    cfg = engine.config.with_overrides(retention={"archive_before_drop": False,
                                                  "metrics_retention_days": 1})
    with agts.connect(cfg) as short:
        short.run_retention(now=day1 + dt.timedelta(days=2))
        kept = points.filter(pl.col("timestamp") >= day1 + dt.timedelta(days=1))
        assert short.query_metrics_multi(["cpu", "mem"], day1, day1 + dt.timedelta(days=1)
                                         ).height == 0
        assert_frame_equal(_got(short.latest(["cpu", "mem"])), _expected(kept))


# -- discovery -------------------------------------------------------------------------------

def test_discovery_lists_what_exists_as_polars_computes_it(engine: agts.StorageEngine) -> None:
    points = _points(5, n=2000, hosts=12).with_columns(
        pl.when(pl.col("metric_name") == "mem").then(pl.struct(
            host=pl.col("labels").struct.field("host"))).otherwise(pl.col("labels")).alias("labels"))
    engine.insert_metrics_batch(points)
    engine.insert_metrics_batch([agts.MetricPoint(T0, "unlabelled", 1.0)])
    keyed = points.with_columns(pl.col("labels").struct.json_encode().alias("key")).unique(
        ["metric_name", "key", "timestamp"], keep="first")  # one point per series and instant
    names = engine.metric_names()
    expected = (keyed.group_by("metric_name").agg(
        pl.col("key").n_unique().alias("series"), pl.col("timestamp").min().alias("first"),
        pl.col("timestamp").max().alias("last"), pl.len().alias("points")).sort("metric_name"))
    assert names.filter(pl.col("metric_name") != "unlabelled").rows() == expected.rows()
    assert names.columns == ["metric_name", "series", "first_timestamp", "last_timestamp",
                             "points_estimate"]
    series = engine.series("cpu", {"region": "eu"})
    want = keyed.filter(pl.col("metric_name") == "cpu", pl.col("key").str.contains('"eu"'))
    assert series.height == want.get_column("key").n_unique()
    assert series.schema["labels"] == pl.Struct({"host": pl.String, "region": pl.String})
    per = want.group_by("key").agg(pl.col("timestamp").min(), pl.col("timestamp").max().alias(
        "last"), pl.len())
    got = series.with_columns(pl.col("labels").struct.json_encode().alias("key")).join(
        per, on="key")
    assert (got["first_timestamp"] == got["timestamp"]).all()
    assert (got["last_timestamp"] == got["last"]).all() and (got["points_estimate"] == got["len"]).all()
    n_cpu, n_mem = (keyed.filter(pl.col("metric_name") == m)["key"].n_unique() for m in ("cpu", "mem"))
    keys = engine.label_keys()
    assert keys.rows() == [("host", n_cpu + n_mem, 2), ("region", n_cpu, 1)]
    assert engine.label_keys("mem").rows() == [("host", n_mem, 1)]
    assert engine.label_keys("unlabelled").height == 0
    values = engine.label_values("region", "cpu")
    assert values.get_column("value").to_list() == ["eu", "us"]
    assert values.get_column("series").sum() == n_cpu
    hosts = engine.label_values("host", ["cpu", "mem"], {"region": "us"})
    assert hosts.get_column("value").to_list() == sorted(
        keyed.filter(pl.col("key").str.contains('"us"')).select(
            pl.col("labels").struct.field("host")).unique().to_series().to_list())
    assert engine.label_values("nope").height == 0 and engine.series("nope").height == 0
    with pytest.raises(agts.ValidationError, match="key must be a non-empty string"):
        engine.label_values("")
