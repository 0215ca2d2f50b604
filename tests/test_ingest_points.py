"""The fast way in for MetricPoint objects: the same batches and errors as the general path, and
single-point puts that the pipeline gathers into one part and stores exactly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import agts
from agts.ingest._normalize import normalize
from agts.ingest._rows import normalize_points, point_rows

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)
P = agts.MetricPoint


def _same_batch(points: list[agts.MetricPoint]) -> None:
    fast, general = normalize_points(points), normalize(points)
    assert fast.points.equals(general.points)
    assert fast.series.equals(general.series)
    assert fast.skipped.schema == general.skipped.schema and fast.skipped.is_empty()


@pytest.mark.parametrize("points", [
    pytest.param([P(T0, "lat", 1.5, {"venue": "okx"})], id="one"),
    pytest.param([P(T0.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))), "lat", 2.0,
                    {"venue": "okx"}), P(T0.replace(tzinfo=None), "lat", 3.0, {"venue": "okx"})],
                 id="other-zone-and-naive"),
    pytest.param([P(T0, "lat", 7, {"b": "2", "a": "1"}), P(T0, "lat", np.float64(0.25),
                    {"a": "1", "b": "2"}), P(T0, "lat", -1e300, {"a": "1", "b": None})],
                 id="int-numpy-and-label-order"),
    pytest.param([P(T0, "n", 1.0, {}), P(T0, "n", 2.0, None), P(T0, "n", 3.0, {"k": 5}),
                  P(T0, "n", 4.0, {"k": True})], id="empty-none-number-bool-labels"),
    pytest.param([P(dt.datetime(2, 1, 1, tzinfo=UTC), "edge", 1.0, {}),
                  P(dt.datetime(9998, 12, 31, 23, 59, 59, 999999), "edge", 2.0, {})],
                 id="datetime-extremes"),
])
def test_fast_path_builds_the_batch_the_general_path_builds(
        points: list[agts.MetricPoint]) -> None:
    assert point_rows(points) is not None  # really the fast path
    _same_batch(points)


@pytest.mark.parametrize(("point", "match"), [
    pytest.param(P(T0, "m", float("nan")), "column 'value' row 1: value is NaN", id="nan"),
    pytest.param(P(T0, "m", float("-inf")), "value is infinite", id="inf"),
    pytest.param(P(T0, "", 1.0), "column 'metric_name' row 1: metric_name is empty", id="empty"),
    pytest.param(P(T0, None, 1.0), "metric_name is null", id="null-name"),  # type: ignore[arg-type]
    pytest.param(P(T0, "m" * 257, 1.0), "longer than 256", id="long-name"),
    pytest.param(P(dt.datetime(1, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), "m", 1.0),
                 "column 'timestamp' row 1: timestamp is outside the range agts stores",
                 id="before-year-2"),
    pytest.param(P(T0, "m", 1.0, {"k": ["x"]}), "must have a string value", id="list-label"),
    pytest.param(P(T0, "m", 1.0, {f"k{i}": "v" for i in range(33)}), "at most 32 labels",
                 id="too-many-labels"),
])
def test_points_the_fast_path_refuses_get_the_general_errors(point: Any, match: str) -> None:
    points = [P(T0, "ok", 1.0), point]
    assert point_rows(points) is None
    with pytest.raises(agts.ValidationError, match=match):
        normalize_points(points)
    skipped = normalize_points(points, on_error="skip")
    assert skipped.points.height == 1
    assert skipped.skipped.get_column("row").to_list() == [1]


def test_a_point_of_the_wrong_type_is_refused_even_when_skipping() -> None:
    points = [P(T0, "ok", 1.0), P("2026-01-01", "m", 1.0)]  # type: ignore[arg-type]
    assert point_rows(points) is None
    for on_error in ("raise", "skip"):
        with pytest.raises(agts.ValidationError, match="row 1: expected a datetime, got '2026"):
            normalize_points(points, on_error=on_error)  # type: ignore[arg-type]


def test_on_error_is_checked_on_the_fast_path_too() -> None:
    with pytest.raises(agts.ValidationError, match="on_error must be one of"):
        normalize_points([P(T0, "m", 1.0)], on_error="ignore")  # type: ignore[arg-type]


def test_single_point_puts_gather_into_one_part_and_round_trip(
        engine: agts.StorageEngine, tmp_path: Path) -> None:
    labels = [{"venue": "okx", "market": "BTC"}, {"venue": "kraken"}]
    with engine.ingestor(batch_size=10_000, flush_interval_ms=60_000, spool_dir=tmp_path) as ing:
        for i in range(500):
            skipped = ing.put(P(T0 + dt.timedelta(microseconds=i), "lat", i / 8, labels[i % 2]))
        assert skipped.is_empty() and skipped.columns[:2] == ["row", "error"]
        assert len(ing._pending) == 1  # 500 puts, one growing part
        ing.put(pl.DataFrame({"timestamp": [T0 + dt.timedelta(seconds=1)], "metric_name": ["lat"],
                              "value": [99.0], "labels": [labels[1]]}))
        for i in range(500, 700):
            ing.put([P(T0 + dt.timedelta(microseconds=i), "lat", i / 8, labels[i % 2])])
        assert len(ing._pending) == 3
        ing.flush(timeout=30)
    got = engine.query_metrics("lat", T0, T0 + dt.timedelta(seconds=2), limit=1000)
    assert got.height == 701
    want = sorted([(T0 + dt.timedelta(microseconds=i), i / 8, labels[i % 2]) for i in range(700)]
                  + [(T0 + dt.timedelta(seconds=1), 99.0, labels[1])], key=lambda r: r[0])
    assert got.get_column("timestamp").to_list() == [r[0] for r in want]
    assert got.get_column("value").to_list() == [r[1] for r in want]
    stored_labels = [{k: v for k, v in row.items() if v is not None}
                     for row in got.get_column("labels").to_list()]
    assert stored_labels == [r[2] for r in want]
    assert ing.stats().points_written == 701
