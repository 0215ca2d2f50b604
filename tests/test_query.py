"""Raw metric queries: rows, dtypes, order, ranges, label filters, pages, batches, limits, cache,
multi-metric frames and argument errors, on a real TimescaleDB."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl
import pytest

import agts
from agts.config import StorageConfig
from tests._query_data import SERIES, SPAN, T0, UTC, insert, open_batch, points, select


@pytest.fixture
def data(engine: agts.StorageEngine) -> pl.DataFrame:
    frame = points(per_series=300)
    insert(engine, frame)
    return frame


def _expected(frame: pl.DataFrame, metric: str, start: datetime, end: datetime,
              labels: dict[str, str] | None = None) -> pl.DataFrame:
    return select(frame, metric, start, end, labels).sort("timestamp")


def test_raw_rows_dtypes_and_order(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(hours=3)
    got = engine.query_metrics("lat", start, end)
    want = _expected(data, "lat", start, end)
    assert got.columns == ["timestamp", "metric_name", "value", "labels", "series_id"]
    assert got.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert got.schema["value"] == pl.Float64
    assert got.schema["labels"] == pl.Struct(
        {"market": pl.String, "region": pl.String, "venue": pl.String})
    assert got.get_column("timestamp").to_list() == want.get_column("timestamp").to_list()
    assert got.get_column("value").to_list() == want.get_column("value").to_list()
    assert got.get_column("timestamp").is_sorted()
    eu = got.filter(pl.col("labels").struct.field("region") == "eu")
    assert eu.get_column("labels").struct.field("venue").null_count() == eu.height > 0


def test_half_open_range_and_microseconds(engine: agts.StorageEngine,
                                          data: pl.DataFrame) -> None:
    first = select(data, "lat", T0, T0 + SPAN, {"venue": "okx", "market": "ETH"}).sort(
        "timestamp").get_column("timestamp")
    a, b = first[10], first[20]
    got = engine.query_metrics("lat", a, b, {"venue": "okx", "market": "ETH"})
    assert got.get_column("timestamp").to_list() == first[10:20].to_list()
    assert engine.query_metrics("lat", a, a).height == 0


def test_label_filters_exact_and_sets(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    okx = engine.query_metrics("lat", T0, T0 + SPAN, {"venue": "okx"})
    assert okx.height == 600
    assert set(okx.get_column("labels").struct.field("market")) == {"BTC", "ETH"}
    both = engine.query_metrics("lat", T0, T0 + SPAN, labels_in={"venue": ["okx", "binance"]})
    assert both.height == 900
    one = engine.query_metrics("lat", T0, T0 + SPAN, {"market": "BTC"},
                               labels_in={"venue": ["okx", "nope"]})
    assert one.height == 300
    assert engine.query_metrics("lat", T0, T0 + SPAN, {"venue": "OKX"}).height == 0


def test_names_and_labels_are_data(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    name, labels = SERIES[-1]
    got = engine.query_metrics(name, T0, T0 + SPAN, labels)
    assert got.height == 300
    assert got.get_column("metric_name").unique().to_list() == [name]
    assert got.get_column("labels")[0] == labels
    assert engine.query_metrics("lat'; DROP TABLE agts.series; --", T0, T0 + SPAN).height == 0
    assert engine.query_metrics("lat", T0, T0 + SPAN).height == 1200  # still there


def test_empty_results_keep_their_schema(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    for frame in (engine.query_metrics("unknown", T0, T0 + SPAN),
                  engine.query_metrics("lat", T0 - timedelta(days=9), T0 - timedelta(days=8))):
        assert frame.height == 0
        assert frame.schema["timestamp"] == pl.Datetime("us", "UTC")
        assert frame.schema["value"] == pl.Float64


def test_naive_and_text_bounds_are_utc(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    aware = engine.query_metrics("lat", T0, T0 + timedelta(hours=1))
    naive = engine.query_metrics("lat", T0.replace(tzinfo=None),
                                 (T0 + timedelta(hours=1)).replace(tzinfo=None))
    text = engine.query_metrics("lat", "2024-03-09T22:00:00Z", "2024-03-09T23:00:00+00:00")
    assert aware.equals(naive) and aware.equals(text)


def test_keyset_pages_cover_every_row_once(engine: agts.StorageEngine,
                                           data: pl.DataFrame) -> None:
    whole = engine.query_metrics("lat", T0, T0 + timedelta(hours=2))
    pages, after = [], None
    while True:
        page = engine.query_metrics("lat", T0, T0 + timedelta(hours=2), limit=97, after=after)
        if page.is_empty():
            break
        assert page.height <= 97
        pages.append(page)
        after = agts.next_cursor(page)
    assert pl.concat(pages).equals(whole)
    assert agts.next_cursor(pages[-1][:0]) is None


def test_iter_batches_bounded_and_complete(engine: agts.StorageEngine,
                                           data: pl.DataFrame) -> None:
    whole = engine.query_metrics("lat", T0, T0 + SPAN)
    batches = list(engine.query_metrics("lat", T0, T0 + SPAN, iter_batches=True, batch_size=250))
    assert [b.height for b in batches] == [250, 250, 250, 250, 200]
    assert pl.concat(batches).equals(whole)
    assert list(engine.query_metrics("nope", T0, T0 + SPAN, iter_batches=True)) == []


def test_max_results_enforced(config: StorageConfig) -> None:
    with agts.connect(config.with_overrides(query={"max_results": 100})) as small:
        insert(small, points(per_series=150))
        with pytest.raises(agts.ResultTooLargeError, match=r"more than 100 rows.*limit=.*"
                                                           r"iter_batches=True"):
            small.query_metrics("lat", T0, T0 + SPAN)
        assert small.query_metrics("lat", T0, T0 + SPAN, limit=100).height == 100
        assert sum(b.height for b in small.query_metrics(
            "lat", T0, T0 + SPAN, iter_batches=True, batch_size=100)) == 600
        with pytest.raises(agts.ValidationError, match=r"limit must be at most 100"):
            small.query_metrics("lat", T0, T0 + SPAN, limit=101)


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"metric_name": ""}, "metric_name must be a non-empty string", id="empty-name"),
    pytest.param({"start": "yesterday"},
                 "start must be a datetime, a date, an ISO 8601 string or a numpy.datetime64, "
                 "got 'yesterday'",
                 id="bad-start"),
    pytest.param({"end": T0 - timedelta(seconds=1)}, "end must not be before start", id="reversed"),
    pytest.param({"labels": {"venue": 1}}, "labels must map non-empty string keys to string",
                 id="label-value"),
    pytest.param({"labels_in": {"venue": "okx"}}, "labels_in must map non-empty string keys",
                 id="labels-in-str"),
    pytest.param({"limit": 0}, "limit must be a positive integer, got 0", id="limit-zero"),
    pytest.param({"after": "17"}, "after must be a cursor", id="bad-cursor"),
    pytest.param({"limit": 5, "iter_batches": True}, "either limit= .* or iter_batches",
                 id="limit-and-stream"),
])
def test_raw_argument_errors(engine: agts.StorageEngine, kwargs: dict, message: str) -> None:
    args = {"metric_name": "lat", "start": T0, "end": T0 + SPAN, **kwargs}
    with pytest.raises(agts.ValidationError, match=message):
        result = engine.query_metrics(**args)
        list(result) if not isinstance(result, pl.DataFrame) else None


def test_cache_hits_closed_ranges_and_never_serves_stale(engine: agts.StorageEngine,
                                                         data: pl.DataFrame) -> None:
    start, end = T0, T0 + timedelta(hours=1)
    first = engine.query_metrics("lat", start, end)
    again = engine.query_metrics("lat", start, end)
    assert again.equals(first)
    stats = engine.query_stats().filter(pl.col("kind") == "raw").row(0, named=True)
    assert (stats["cache_hits"], stats["cache_misses"], stats["cache_hit_rate"]) == (1, 1, 0.5)
    assert stats["queries"] == 2 and stats["rows"] == 2 * first.height
    late = pl.DataFrame({"timestamp": [T0 + timedelta(minutes=5, microseconds=3)],
                         "metric_name": ["lat"], "value": [42.0],
                         "labels": [{"venue": "okx", "market": "BTC"}]})
    insert(engine, late)  # a late point inside the cached range
    fresh = engine.query_metrics("lat", start, end)
    assert fresh.height == first.height + 1
    assert 42.0 in fresh.get_column("value").to_list()
    # an open range (end in the future) is never cached
    now = datetime.now(UTC)
    engine.query_metrics("lat", now - timedelta(hours=1), now + timedelta(hours=1))
    engine.query_metrics("lat", now - timedelta(hours=1), now + timedelta(hours=1))
    stats = engine.query_stats().filter(pl.col("kind") == "raw").row(0, named=True)
    assert (stats["cache_hits"], stats["cache_misses"]) == (1, 2)
    assert stats["p50_ms"] > 0



def test_cache_sees_a_batch_that_began_before_the_cached_query(engine: agts.StorageEngine,
                                                               data: pl.DataFrame) -> None:
    # The batch's transaction began ten minutes ago, wrote during the first query and committed
    # after it: the cached frame lacks its point, so the next query must not be a hit.
    start, end = T0, T0 + timedelta(hours=1)
    at = T0 + timedelta(minutes=20, microseconds=9)
    conn = open_batch(engine, at, 4242.0, timedelta(minutes=10))
    try:
        first = engine.query_metrics("lat", start, end)
        conn.commit()
    finally:
        conn.close()
    assert 4242.0 not in first.get_column("value").to_list()
    fresh = engine.query_metrics("lat", start, end)
    assert fresh.height == first.height + 1 and 4242.0 in fresh.get_column("value").to_list()
    assert engine.query_metrics("lat", start, end).equals(fresh)  # and then cached again
    stats = engine.query_stats().filter(pl.col("kind") == "raw").row(0, named=True)
    assert (stats["cache_hits"], stats["cache_misses"]) == (1, 2)


def test_multi_long_and_wide(engine: agts.StorageEngine, data: pl.DataFrame) -> None:
    start, end = T0, T0 + SPAN
    long = engine.query_metrics_multi(["lat", "fill_rate"], start, end,
                                      labels={"venue": "binance"})
    assert long.height == 600 and long.get_column("timestamp").is_sorted()
    assert set(long.get_column("metric_name")) == {"lat", "fill_rate"}
    wide = engine.query_metrics_multi(["fill_rate", "lat"], start, end,
                                      labels={"venue": "binance"}, shape="wide")
    assert wide.columns == ["timestamp", "fill_rate", "lat"]
    assert wide.height == 600  # distinct timestamps: each row has one metric, the other null
    assert wide.get_column("lat").drop_nulls().to_list() == _expected(
        data, "lat", start, end, {"venue": "binance"}).get_column("value").to_list()
    bucketed = engine.query_metrics_multi(["lat", "fill_rate"], start, end, bucket="1h",
                                          aggregation="count", shape="wide")
    assert bucketed.columns == ["timestamp", "lat", "fill_rate"]
    assert bucketed.get_column("lat").sum() == 1200
    assert bucketed.get_column("fill_rate").sum() == 300
    with pytest.raises(agts.ValidationError, match=r"one series per metric.*\['lat'\]"):
        engine.query_metrics_multi(["lat", "fill_rate"], start, end, shape="wide")
    with pytest.raises(agts.ValidationError, match="shape must be one of"):
        engine.query_metrics_multi(["lat"], start, end, shape="tall")  # type: ignore[arg-type]


def test_abandoned_stream_leaves_engine_usable(engine: agts.StorageEngine,
                                               data: pl.DataFrame) -> None:
    stream = engine.query_metrics("lat", T0, T0 + SPAN, iter_batches=True, batch_size=100)
    first = next(stream)
    assert first.height == 100 and first.get_column("timestamp").is_sorted()
    stream.close()  # type: ignore[attr-defined]
    assert engine.query_metrics("lat", T0, T0 + SPAN).height == 1200
    assert sum(f.height for f in engine.query_metrics(
        "lat", T0, T0 + SPAN, iter_batches=True, batch_size=7)) == 1200
    stats = engine.query_stats().filter(pl.col("kind") == "stream").row(0, named=True)
    assert stats["queries"] == 2 and stats["rows"] == 1300


def test_equal_timestamps_order_by_series_id(engine: agts.StorageEngine) -> None:
    """Points of several series at the same instants come back ordered by (timestamp,
    series_id), whatever order they were stored in, and a one-shot read equals the keyset pages
    (ordered by the server) row for row."""
    stamps = [T0 + timedelta(seconds=s) for s in (5, 1, 3, 1, 5, 3)]
    venues = ["c", "b", "a", "a", "b", "c"]
    engine.insert_metrics_batch(pl.DataFrame({
        "timestamp": stamps, "metric_name": ["tie"] * 6, "value": [float(i) for i in range(6)],
        "labels": [{"venue": v} for v in venues]}))
    engine.insert_metrics_batch(pl.DataFrame({  # later batches: the same instants, more series
        "timestamp": stamps, "metric_name": ["tie"] * 6, "value": [10.0 + i for i in range(6)],
        "labels": [{"venue": v} for v in ["d", "d", "e", "e", "f", "f"]]}))
    got = engine.query_metrics("tie", T0, T0 + timedelta(minutes=1))
    assert got.height == 12
    assert got.select("timestamp", "series_id").equals(
        got.select("timestamp", "series_id").sort("timestamp", "series_id"))
    by_venue = dict(zip(got.get_column("labels").struct.field("venue").to_list(),
                        got.get_column("series_id").to_list(), strict=False))
    assert sorted(by_venue) == ["a", "b", "c", "d", "e", "f"]
    first = got.filter(pl.col("timestamp") == T0 + timedelta(seconds=1))
    assert first.get_column("labels").struct.field("venue").to_list() == \
        sorted(["b", "a", "d", "e"], key=lambda v: by_venue[v])
    pages = [engine.query_metrics("tie", T0, T0 + timedelta(minutes=1), limit=5)]
    while (after := agts.next_cursor(pages[-1])) is not None and pages[-1].height == 5:
        pages.append(engine.query_metrics("tie", T0, T0 + timedelta(minutes=1), limit=5,
                                          after=after))
    assert pl.concat(pages).equals(got)
    single = engine.query_metrics("tie", T0, T0 + timedelta(minutes=1), {"venue": "d"})
    assert single.get_column("value").to_list() == [11.0, 10.0]
    assert single.get_column("series_id").to_list() == [by_venue["d"]] * 2
    assert single.schema["series_id"] == pl.Int32
    one = engine.query_metrics("tie", T0, T0 + timedelta(minutes=1), {"venue": "d"}, limit=1)
    two = engine.query_metrics("tie", T0, T0 + timedelta(minutes=1), {"venue": "d"}, limit=1,
                               after=agts.next_cursor(one))
    assert pl.concat([one, two]).equals(single)
