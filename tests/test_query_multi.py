"""Several metrics × groups in one statement (query_metrics_multi), against Polars over the same
points: group_by, several aggregations wide, label sets that differ per metric, rollups, tiers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts

UTC = dt.UTC
T0 = dt.datetime(2025, 6, 2, tzinfo=UTC)
METRICS = ["usage_user", "usage_system", "usage_idle"]


@pytest.fixture
def points(engine: agts.StorageEngine) -> pl.DataFrame:
    """6 hosts × 3 metrics every 30 s for 12 h; host h5 has no region label."""
    rng = np.random.default_rng(7)
    steps = 12 * 120
    frames = []
    for h in range(6):
        for metric in METRICS:
            labels = {"hostname": f"h{h}"} | ({"region": "eu" if h < 3 else "us"} if h < 5 else {})
            frames.append(pl.DataFrame({
                "timestamp": pl.datetime_range(T0, T0 + dt.timedelta(seconds=30 * (steps - 1)),
                                               "30s", eager=True, time_zone="UTC"),
                "metric_name": metric, "value": rng.uniform(0, 100, steps),
                "labels": [labels] * steps}).with_columns(pl.col("labels").struct.json_encode()))
    data = pl.concat(frames)
    engine.insert_metrics_batch(data)
    return data.with_columns(
        hostname=pl.col("labels").str.json_path_match("$.hostname"),
        region=pl.col("labels").str.json_path_match("$.region"))


def _polars(points: pl.DataFrame, every: str, aggs: dict[str, pl.Expr],
            keys: list[str]) -> pl.DataFrame:
    return (points.with_columns(pl.col("timestamp").dt.truncate(every))
            .group_by("timestamp", "metric_name", *keys).agg(**aggs))


def test_double_groupby_all_in_one_call(engine: agts.StorageEngine, points: pl.DataFrame) -> None:
    """TSBS double-groupby-all: the mean of every metric per host and hour, wide."""
    end = T0 + dt.timedelta(hours=12)
    got = engine.query_metrics_multi(METRICS, T0, end, bucket="1h", aggregation="avg",
                                     group_by=["hostname"], shape="wide")
    assert got.columns == ["timestamp", "hostname", *METRICS]
    assert got.height == 12 * 6
    want = _polars(points, "1h", {"avg": pl.col("value").mean()}, ["hostname"]).pivot(
        "metric_name", index=["timestamp", "hostname"], values="avg").select(got.columns).sort(
        "timestamp", "hostname")
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-9)


def test_several_aggregations_long_and_wide(engine: agts.StorageEngine,
                                            points: pl.DataFrame) -> None:
    start, end = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=3)
    long = engine.query_metrics_multi(METRICS[:2], start, end, {"region": "eu"}, bucket="30m",
                                      aggregation=["max", "count", "p90"], group_by=["hostname"])
    assert long.columns == ["timestamp", "metric_name", "hostname", "max", "count", "p90"]
    assert long.schema["count"] == pl.Int64
    # Ordered by bucket, group, then the metrics in the order given.
    assert long.select("timestamp", "hostname").rows()[:2] == [(start, "h0")] * 2
    assert long["metric_name"].to_list()[:2] == METRICS[:2]
    rows = points.filter(pl.col("timestamp") >= start, pl.col("timestamp") < end,
                         pl.col("region") == "eu", pl.col("metric_name").is_in(METRICS[:2]))
    want = _polars(rows, "30m", {"max": pl.col("value").max(), "count": pl.len().cast(pl.Int64),
                                 "p90": pl.col("value").quantile(0.9, "linear")}, ["hostname"])
    assert_frame_equal(long.sort("timestamp", "metric_name", "hostname"),
                       want.select(long.columns).sort("timestamp", "metric_name", "hostname"),
                       check_exact=False, rel_tol=1e-9)
    wide = engine.query_metrics_multi(METRICS[:2], start, end, {"region": "eu"}, bucket="30m",
                                      aggregation=["max", "count"], group_by=["hostname"],
                                      shape="wide")
    assert wide.columns == ["timestamp", "hostname", "usage_user_max", "usage_user_count",
                            "usage_system_max", "usage_system_count"]
    assert wide.height == 4 * 3


def test_a_series_without_the_group_key_falls_in_the_null_group(
        engine: agts.StorageEngine, points: pl.DataFrame) -> None:
    end = T0 + dt.timedelta(hours=12)
    got = engine.query_metrics_multi(METRICS, T0, end, bucket="12h", aggregation="count",
                                     group_by=["region"], shape="wide")
    assert got.get_column("region").to_list() == ["eu", "us", None]
    assert got.get_column("usage_idle").to_list() == [3 * 1440, 2 * 1440, 1440]


def test_the_rollups_answer_the_same(engine: agts.StorageEngine, points: pl.DataFrame) -> None:
    end = T0 + dt.timedelta(hours=12)
    ask = {"bucket": "1h", "aggregation": ["avg", "min", "max", "count", "stddev"],
           "group_by": ["hostname"], "shape": "wide"}
    before = engine.query_metrics_multi(METRICS, T0, end, **ask)
    engine.refresh_rollups()
    engine.clear_query_cache()
    after = engine.query_metrics_multi(METRICS, T0, end, **ask)
    assert_frame_equal(before, after, check_exact=False, rel_tol=1e-9)


def test_multi_over_an_archived_range(engine: agts.StorageEngine, points: pl.DataFrame,
                                      tmp_path: Path) -> None:
    day = T0.replace(hour=0)
    end = T0 + dt.timedelta(hours=12)
    hot = engine.query_metrics_multi(METRICS, T0, end, bucket="1h", aggregation="sum",
                                     group_by=["hostname"], shape="wide")
    engine.archive("metrics", day, day + dt.timedelta(days=1), drop=True, root=str(tmp_path))
    cold = engine.query_metrics_multi(METRICS, T0, end, bucket="1h", aggregation="sum",
                                      group_by=["hostname"], shape="wide", tiers="all")
    assert_frame_equal(hot, cold, check_exact=False, rel_tol=1e-9)
    raw = engine.query_metrics_multi(METRICS, T0, end, {"hostname": "h0"}, tiers="all")
    assert raw.height == points.filter(pl.col("hostname") == "h0").height


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"group_by": ["metric_name"]}, "group_by key 'metric_name' clashes",
                 id="group-by-metric-name"),
    pytest.param({"group_by": ["hostname"], "bucket": None}, "need bucket=", id="no-bucket"),
    pytest.param({"tiers": "both"}, "tiers must be one of", id="tiers"),
])
def test_multi_argument_errors(engine: agts.StorageEngine, kwargs: dict, message: str) -> None:
    args = {"bucket": "1h", "aggregation": "avg", **kwargs}
    with pytest.raises(agts.ValidationError, match=message):
        engine.query_metrics_multi(METRICS, T0, T0 + dt.timedelta(hours=1), **args)


@pytest.mark.parametrize("bucket", ["1h", "3h"])
def test_rollup_rows_combined_in_polars_or_in_sql_give_the_same_answer(
        engine: agts.StorageEngine, points: pl.DataFrame, bucket: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Many rollup rows are combined in Polars, few in SQL: both agree with Polars over the raw
    points, with late points in refreshed buckets (read raw until the next refresh) and a
    series without the group key."""
    from agts.query import _service

    engine.refresh_rollups()
    late = points.filter(pl.col("timestamp").dt.minute() == 7).head(40).with_columns(
        pl.col("timestamp") + dt.timedelta(seconds=1), pl.col("value") * 3)
    engine.insert_metrics_batch(late.select("timestamp", "metric_name", "value", "labels"))
    every = points.vstack(late.select(points.columns))
    end = T0 + dt.timedelta(hours=12)
    asks = [  # (group_by, aggregations): first/last where each group is one series (no ties)
        (["region"], ["avg", "min", "max", "sum", "count"]),
        (["hostname"], ["first", "last", "count"]),
    ]
    exprs = {"avg": pl.col("value").mean(), "min": pl.col("value").min(),
             "max": pl.col("value").max(), "sum": pl.col("value").sum(),
             "count": pl.len().cast(pl.Int64),
             "first": pl.col("value").sort_by("timestamp").first(),
             "last": pl.col("value").sort_by("timestamp").last()}
    for keys, aggs in asks:
        answers = []
        for threshold in (0, 10**9):
            monkeypatch.setattr(_service, "_COMBINE_IN_POLARS", threshold)
            engine.clear_query_cache()
            answers.append(engine.query_metrics_multi(METRICS, T0, end, bucket=bucket,
                                                      aggregation=aggs, group_by=keys))
        polars_path, sql_path = answers
        want = (every.with_columns(pl.col("timestamp").dt.truncate(bucket).alias("bucket"))
                .group_by("bucket", "metric_name", *keys).agg(**{a: exprs[a] for a in aggs})
                .rename({"bucket": "timestamp"})
                .sort("timestamp", *keys, "metric_name", nulls_last=True))
        for got in (polars_path, sql_path):
            got = got.sort("timestamp", *keys, "metric_name", nulls_last=True)
            assert_frame_equal(got.select(want.columns), want, check_exact=False, rel_tol=1e-9,
                               check_dtypes=False)
        assert_frame_equal(polars_path, sql_path, check_exact=False, rel_tol=1e-9)
        if keys == ["region"]:
            assert polars_path.get_column("region").null_count() > 0
