"""Bucketed aggregates against an independent Polars computation over the inserted points: every
aggregation, bucket widths and edges, UTC midnight, label filters, group_by, gap filling, rollup
routing, the unrefreshed tail and late-arriving points, on both editions' paths."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

import agts
from tests._query_data import SPAN, T0, UTC, assert_close, insert, open_batch, points, reference

ALL = ["avg", "min", "max", "sum", "count", "first", "last", "stddev", "p50", "p90", "p95",
       "p99", "p99.9", "median"]
ROLLUP_AGGS = ["avg", "min", "max", "sum", "count", "first", "last", "stddev"]


@pytest.fixture
def data(engine: agts.StorageEngine) -> pl.DataFrame:
    frame = points(per_series=300)
    insert(engine, frame)
    return frame


@pytest.mark.parametrize("bucket", [
    pytest.param("15s", id="15s"), pytest.param("1m", id="1m"), pytest.param("7m", id="7m"),
    pytest.param(timedelta(hours=1), id="1h-timedelta"), pytest.param("1d", id="1d"),
])
def test_every_aggregation_matches_reference(engine: agts.StorageEngine, data: pl.DataFrame,
                                             bucket: str | timedelta) -> None:
    start, end = T0 + timedelta(minutes=13, seconds=7), T0 + timedelta(hours=3, minutes=1)
    got = engine.query_aggregated("lat", start, end, bucket, ALL)
    width = agts.query.parse_bucket(bucket)
    assert_close(got, reference(data, "lat", start, end, width, ALL))
    assert got.schema["count"] == pl.Int64 and got.schema["timestamp"] == pl.Datetime("us", "UTC")


def test_utc_midnight_bucket_edges(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    got = engine.query_aggregated("lat", T0, T0 + SPAN, "1d", ["count", "first", "last"])
    midnight = datetime(2024, 3, 10, tzinfo=UTC)
    assert got.get_column("timestamp").to_list() == [midnight - timedelta(days=1), midnight]
    assert got.get_column("count").sum() == 1200
    assert_close(got, reference(data, "lat", T0, T0 + SPAN, timedelta(days=1),
                                ["count", "first", "last"]))


def test_label_filters_and_group_by(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    got = engine.query_aggregated("lat", T0, T0 + SPAN, "30m", ["avg", "count", "p95"],
                                  {"market": "BTC"}, group_by=["venue"])
    assert got.columns == ["timestamp", "venue", "avg", "count", "p95"]
    assert_close(got, reference(data, "lat", T0, T0 + SPAN, timedelta(minutes=30),
                                ["avg", "count", "p95"], labels={"market": "BTC"},
                                group_by=["venue"]))
    groups = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "count",
                                     group_by=["venue", "market"])
    assert_close(groups, reference(data, "lat", T0, T0 + SPAN, timedelta(hours=1), ["count"],
                                   group_by=["venue", "market"]))
    assert groups.filter(pl.col("venue").is_null()).get_column("count").sum() == 300  # "eu"
    subset = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "count",
                                     labels_in={"market": ["ETH"]})
    assert subset.get_column("count").sum() == 300


def test_empty_ranges_and_single_points(engine: agts.StorageEngine) -> None:
    at = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    insert(engine, pl.DataFrame({"timestamp": [at], "metric_name": ["one"], "value": [2.5],
                                 "labels": [{"a": "b"}]}))
    got = engine.query_aggregated("one", at - timedelta(hours=1), at + timedelta(hours=1), "1m",
                                  [*ROLLUP_AGGS, "p50"])
    assert got.rows() == [(datetime(2024, 5, 1, 12, 0, tzinfo=UTC), 2.5, 2.5, 2.5, 2.5, 1, 2.5,
                           2.5, None, 2.5)]
    for frame in (engine.query_aggregated("one", at, at, "1m", "avg"),
                  engine.query_aggregated("one", at + timedelta(microseconds=1),
                                          at + timedelta(hours=1), "1m", "avg"),
                  engine.query_aggregated("missing", at, at + timedelta(hours=1), "1m", "avg")):
        assert frame.height == 0 and frame.schema["avg"] == pl.Float64


def test_gap_fill_null_and_forward(engine: agts.StorageEngine) -> None:
    base = datetime(2024, 6, 1, tzinfo=UTC)
    stamps = [base + timedelta(minutes=m, seconds=5) for m in (0, 1, 4)]
    insert(engine, pl.DataFrame({"timestamp": stamps, "metric_name": ["g"] * 3,
                                 "value": [1.0, 2.0, 5.0], "labels": [{"v": "x"}] * 3}))
    end = base + timedelta(minutes=6)
    nulls = engine.query_aggregated("g", base, end, "1m", ["avg", "count"], fill="null")
    assert nulls.get_column("avg").to_list() == [1.0, 2.0, None, None, 5.0, None]
    assert nulls.get_column("count").to_list() == [1, 1, 0, 0, 1, 0]
    carried = engine.query_aggregated("g", base, end, "1m", ["avg", "count"], fill="forward",
                                      group_by=["v"])
    assert carried.get_column("avg").to_list() == [1.0, 2.0, 2.0, 2.0, 5.0, 5.0]
    assert carried.get_column("count").to_list() == [1, 1, 0, 0, 1, 0]
    assert carried.get_column("v").to_list() == ["x"] * 6
    none = engine.query_aggregated("nothing", base, end, "2m", "avg", fill="null")
    assert none.height == 3 and none.get_column("avg").null_count() == 3


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"bucket": "0s"}, "bucket must be a positive duration, got '0s'", id="zero"),
    pytest.param({"bucket": "1mo"}, "bucket must be a timedelta or a duration like", id="month"),
    pytest.param({"bucket": timedelta(seconds=-1)}, "bucket must be a positive duration",
                 id="negative"),
    pytest.param({"aggregation": "mean"}, "unknown aggregation 'mean'; choose from", id="mean"),
    pytest.param({"aggregation": "p101"}, "percentile must be between p0 and p100", id="p101"),
    pytest.param({"aggregation": []}, "aggregation must be a name or a non-empty list",
                 id="none"),
    pytest.param({"aggregation": ["avg", "avg"]}, "lists a name twice", id="twice"),
    pytest.param({"group_by": ["avg"]}, "group_by key 'avg' clashes", id="clash"),
    pytest.param({"fill": "zero"}, r"fill must be one of \('null', 'forward'\)", id="fill"),
])
def test_aggregate_argument_errors(engine: agts.StorageEngine, kwargs: dict,
                                   message: str) -> None:
    args = {"metric_name": "lat", "start": T0, "end": T0 + SPAN, "bucket": "1m",
            "aggregation": "avg", **kwargs}
    with pytest.raises(agts.ValidationError, match=message):
        engine.query_aggregated(**args)


# -- rollups (both editions) ---------------------------------------------------------------------

def _tamper(engine: agts.StorageEngine, table: str, factor: float) -> None:
    """Scale the stored maxima of a rollup: a query that reads the rollup shows it. (Writes that
    bypass the ingest ledger are invisible to the query cache: clear it.)"""
    engine.clear_query_cache()
    with engine.db.connection() as conn:
        if engine.server.community:  # a continuous aggregate: scale its materialization
            row = conn.execute(
                "SELECT format('%%I.%%I', h.schema_name, h.table_name) "
                "FROM _timescaledb_catalog.continuous_agg c JOIN _timescaledb_catalog.hypertable h "
                "ON h.id = c.mat_hypertable_id WHERE c.user_view_name = %s", (table,)).fetchone()
            assert row is not None
            conn.execute(f"UPDATE {row[0]} SET mx = mx * %s", (factor,))
        else:
            conn.execute(f"UPDATE agts.{table} SET mx = mx * %s", (factor,))


def test_rollups_answer_exactly_and_route(any_edition: agts.StorageEngine) -> None:
    engine = any_edition
    frame = points(per_series=300)
    insert(engine, frame)
    start, end = T0, T0 + SPAN
    before = engine.query_aggregated("lat", start, end, "1h", ROLLUP_AGGS, group_by=["venue"])
    done = engine.refresh_rollups()
    assert set(done) == {"rollup_1m", "rollup_1h"}
    after = engine.query_aggregated("lat", start, end, "1h", ROLLUP_AGGS, group_by=["venue"])
    want = reference(frame, "lat", start, end, timedelta(hours=1), ROLLUP_AGGS,
                     group_by=["venue"])
    assert_close(before, want)
    assert_close(after, want)
    for bucket, table in (("2h", "rollup_1h"), ("5m", "rollup_1m")):
        exact = engine.query_aggregated("lat", start, end, bucket, ["max", "p50"])
        _tamper(engine, table, 2.0)
        routed = engine.query_aggregated("lat", start, end, bucket, ["max"])
        raw = engine.query_aggregated("lat", start, end, bucket, ["max", "p50"])  # percentile
        _tamper(engine, table, 0.5)
        assert routed.get_column("max").to_list() == [
            2 * v for v in exact.get_column("max").to_list()]
        assert raw.equals(exact)
    # an unaligned start cannot use a rollup: raw answer, still equal to the reference
    odd = engine.query_aggregated("lat", start + timedelta(seconds=30), end, "1h", ROLLUP_AGGS)
    assert_close(odd, reference(frame, "lat", start + timedelta(seconds=30), end,
                                timedelta(hours=1), ROLLUP_AGGS))


def test_late_points_and_unrefreshed_tail(any_edition: agts.StorageEngine) -> None:
    engine = any_edition
    frame = points(per_series=200)
    insert(engine, frame)
    engine.refresh_rollups()
    # late points inside buckets the rollups hold, and points after the watermark (the tail)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    late = pl.DataFrame({
        "timestamp": [T0 + timedelta(minutes=7, microseconds=11), T0 + timedelta(hours=2, seconds=1),
                      now + timedelta(minutes=1, seconds=5), now + timedelta(hours=1, minutes=2)],
        "metric_name": ["lat"] * 4, "value": [2_000_000.0, -5.0, 7.0, 9.0],
        "labels": [{"venue": "okx", "market": "BTC"}] * 4,
    })
    insert(engine, late)
    everything = pl.concat([frame, late], how="diagonal_relaxed")
    ranges = [(T0, T0 + SPAN), (now - timedelta(hours=2), now + timedelta(hours=2)),
              (T0, now + timedelta(hours=2))]  # late buckets and the tail in one statement
    for _ in range(2):  # before and after the next refresh
        for start, end in ranges:
            for bucket in ("1h", "1m"):
                got = engine.query_aggregated("lat", start, end, bucket, ROLLUP_AGGS)
                assert_close(got, reference(everything, "lat", start, end,
                                            agts.query.parse_bucket(bucket), ROLLUP_AGGS))
        engine.refresh_rollups()
    peak = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "max")
    assert peak.get_column("max")[0] == 2_000_000.0


def test_late_batch_buckets_come_from_raw_until_refreshed(any_edition: agts.StorageEngine) -> None:
    engine = any_edition
    insert(engine, points(per_series=100))
    engine.refresh_rollups()
    exact = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "max")
    insert(engine, pl.DataFrame({"timestamp": [T0 + timedelta(hours=1, minutes=30)],
                                 "metric_name": ["lat"], "value": [1.0],
                                 "labels": [{"venue": "okx", "market": "BTC"}]}))
    _tamper(engine, "rollup_1h", 2.0)
    try:
        mixed = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "max").get_column("max")
    finally:
        _tamper(engine, "rollup_1h", 0.5)
    # the hour the late batch touched is computed from raw points; the others from the rollup
    assert mixed.to_list() == [2 * v if i != 1 else v
                               for i, v in enumerate(exact.get_column("max").to_list())]
    engine.refresh_rollups()
    _tamper(engine, "rollup_1h", 2.0)
    try:
        routed = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "max").get_column("max")
    finally:
        _tamper(engine, "rollup_1h", 0.5)
    assert routed.to_list() == [2 * v for v in exact.get_column("max").to_list()]


def test_batch_open_across_a_refresh_is_not_missed(any_edition: agts.StorageEngine) -> None:
    # A transaction that began half an hour ago and commits after a refresh: the refresh could not
    # see its points, and the next one must take them in (by transaction id, not by start time).
    engine = any_edition
    frame = points(per_series=100)
    insert(engine, frame)
    engine.refresh_rollups()
    at = T0 + timedelta(hours=1, minutes=10, microseconds=5)
    conn = open_batch(engine, at, 5_000_000.0, timedelta(minutes=30))
    try:
        engine.refresh_rollups()
        conn.commit()
    finally:
        conn.close()
    late = pl.DataFrame({"timestamp": [at], "metric_name": ["lat"], "value": [5_000_000.0],
                         "labels": [{"venue": "okx", "market": "BTC"}]})
    want = reference(pl.concat([frame, late], how="diagonal_relaxed"), "lat", T0, T0 + SPAN,
                     timedelta(hours=1), ROLLUP_AGGS)
    for _ in range(2):  # before and after the refresh that takes the batch in
        engine.clear_query_cache()
        assert_close(engine.query_aggregated("lat", T0, T0 + SPAN, "1h", ROLLUP_AGGS), want)
        engine.refresh_rollups()
    _tamper(engine, "rollup_1h", 2.0)  # ... and the hour is now answered by the rollup itself
    try:
        routed = engine.query_aggregated("lat", T0, T0 + SPAN, "1h", "max")
    finally:
        _tamper(engine, "rollup_1h", 0.5)
    assert routed.get_column("max")[1] == 2 * 5_000_000.0
