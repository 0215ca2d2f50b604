"""Metrics ingest against a real TimescaleDB: every input form, idempotency, validation, skip mode."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import string
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import agts

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 2, 9, 30, 0, 123456, tzinfo=UTC)

ROWS = [
    (T0, "order_latency_ms", 1.25, {"venue": "binance", "market": "BTC-USDT"}),
    (T0 + dt.timedelta(microseconds=1), "order_latency_ms", -0.5,
     {"venue": "binance", "market": "BTC-USDT"}),
    (T0, "fill_rate", 0.0, {"venue": "kraken", "market": "ETH-USD", "strategy": "mm"}),
    (T0 + dt.timedelta(days=400), "pnl_usd", 1e300, {}),
]


def stored(engine: agts.StorageEngine) -> list[tuple[Any, ...]]:
    with engine.db.connection() as conn:
        return conn.execute(
            'SELECT "timestamp", metric_name, value, labels FROM agts.metrics '
            'ORDER BY metric_name, "timestamp"'
        ).fetchall()


def expected() -> list[tuple[Any, ...]]:
    return sorted(ROWS, key=lambda r: (r[1], r[0]))


def _polars() -> pl.DataFrame:
    return pl.DataFrame({
        "timestamp": [r[0] for r in ROWS], "metric_name": [r[1] for r in ROWS],
        "value": [r[2] for r in ROWS],
        "labels": pl.Series([r[3] for r in ROWS], dtype=pl.Struct(
            {"venue": pl.String, "market": pl.String, "strategy": pl.String})),
    })


def _pandas() -> pd.DataFrame:
    return pd.DataFrame({
        "timestamp": pd.to_datetime([r[0] for r in ROWS], utc=True),
        "metric_name": [r[1] for r in ROWS], "value": [r[2] for r in ROWS],
        "labels": [r[3] for r in ROWS],
    })


def _arrow_map() -> pa.Table:
    return pa.table({
        "timestamp": pa.array([r[0] for r in ROWS], pa.timestamp("us", "UTC")),
        "metric_name": [r[1] for r in ROWS], "value": [r[2] for r in ROWS],
        "labels": pa.array([list(r[3].items()) for r in ROWS], pa.map_(pa.string(), pa.string())),
    })


def _json_text() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict({
        "timestamp": pa.array([r[0] for r in ROWS], pa.timestamp("us", "UTC")),
        "metric_name": [r[1] for r in ROWS], "value": [r[2] for r in ROWS],
        "labels": [json.dumps(r[3]) for r in ROWS],
    })


def _reader() -> pa.RecordBatchReader:
    batch = _json_text()
    return pa.RecordBatchReader.from_batches(batch.schema, [batch])


def _points() -> list[agts.MetricPoint]:
    return [agts.MetricPoint(*r) for r in ROWS]


def _nanoseconds_other_zone() -> pl.DataFrame:
    # Same instants, nanosecond unit, New York time, 999 extra nanoseconds (truncated).
    frame = _polars()
    return frame.with_columns(
        (pl.col("timestamp").dt.cast_time_unit("ns") + pl.duration(nanoseconds=999))
        .dt.convert_time_zone("America/New_York"))


def _naive() -> pl.DataFrame:
    return _polars().with_columns(pl.col("timestamp").dt.replace_time_zone(None))


@pytest.mark.parametrize("make", [
    pytest.param(_polars, id="polars-struct"),
    pytest.param(_pandas, id="pandas-dicts"),
    pytest.param(_arrow_map, id="arrow-table-map"),
    pytest.param(_json_text, id="arrow-batch-json-text"),
    pytest.param(_reader, id="arrow-reader"),
    pytest.param(_points, id="metric-points"),
    pytest.param(_nanoseconds_other_zone, id="ns-new-york"),
    pytest.param(_naive, id="naive-is-utc"),
])
def test_every_input_form_round_trips(engine: agts.StorageEngine, make: Any) -> None:
    result = engine.insert_metrics_batch(make())
    assert (result.rows_written, result.duplicates, result.rows_skipped) == (4, 0, 0)
    assert result.new_series == 3
    assert stored(engine) == expected()


def test_insert_metric_and_series_reuse(engine: agts.StorageEngine) -> None:
    engine.insert_metric(agts.MetricPoint(T0, "queue_depth", 3.0, {"b": "2", "a": "1"}))
    result = engine.insert_metric(agts.MetricPoint(T0 + dt.timedelta(seconds=1), "queue_depth",
                                                   4.0, {"a": "1", "b": "2"}))
    assert result.new_series == 0
    with engine.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM agts.series").fetchone() == (1,)
    assert [r[2] for r in stored(engine)] == [3.0, 4.0]


def test_batch_sent_three_times_is_stored_once(engine: agts.StorageEngine) -> None:
    batch_id = str(uuid.uuid4())
    first = engine.insert_metrics_batch(_polars(), batch_id=batch_id)
    again = [engine.insert_metrics_batch(_polars(), batch_id=batch_id) for _ in range(2)]
    assert first.rows_written == 4 and not first.already_ingested
    assert all(r.already_ingested and r.rows_written == 0 and r.duplicates == 4 for r in again)
    assert stored(engine) == expected()
    with engine.db.connection() as conn:
        assert conn.execute(
            "SELECT batch_id::text, rows, method FROM agts.ingest_batches").fetchall() == [
            (batch_id, 4, "copy")]


def test_overlapping_batch_merges_and_ledgers(engine: agts.StorageEngine) -> None:
    engine.insert_metrics_batch(_polars().head(2))
    result = engine.insert_metrics_batch(_polars())  # new id, two points already stored
    assert (result.rows_written, result.duplicates) == (2, 2)
    assert stored(engine) == expected()
    with engine.db.connection() as conn:
        rows = conn.execute("SELECT rows, duplicates, method, min_time, max_time FROM "
                            "agts.ingest_batches ORDER BY ingested_at, method").fetchall()
    assert rows == [(2, 0, "copy", T0, T0 + dt.timedelta(microseconds=1)),
                    (2, 2, "merge", T0, T0 + dt.timedelta(days=400))]


def test_duplicates_within_a_batch_keep_the_first(engine: agts.StorageEngine) -> None:
    frame = pl.DataFrame({"timestamp": [T0, T0, T0], "metric_name": ["m", "m", "m"],
                          "value": [1.0, 2.0, 3.0]})
    result = engine.insert_metrics_batch(frame)
    assert (result.rows_written, result.duplicates) == (1, 2)
    assert stored(engine) == [(T0, "m", 1.0, {})]


def _frame(**changes: Any) -> pl.DataFrame:
    data: dict[str, Any] = {
        "timestamp": [T0, T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=2)],
        "metric_name": ["m", "m", "m"], "value": [1.0, 2.0, 3.0],
        "labels": ['{"a": "1"}', '{"a": "1"}', '{"a": "1"}'],
    }
    data.update(changes)
    return pl.DataFrame({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(("data", "column", "row", "match"), [
    pytest.param(_frame(value=None), "value", None, "missing column 'value'", id="missing-column"),
    pytest.param(_frame(value=["1", "2", "3"]), "value", None,
                 "column 'value' must hold numbers", id="value-text"),
    pytest.param(_frame(timestamp=["2026-01-01"] * 3), "timestamp", None,
                 "column 'timestamp' must hold timestamps", id="timestamp-text"),
    pytest.param(_frame(labels=[1, 2, 3]), "labels", None, "column 'labels' must hold dicts",
                 id="labels-int"),
    pytest.param(_frame(metric_name=["m", None, "m"]), "metric_name", 1, "metric_name is null",
                 id="null-name"),
    pytest.param(_frame(metric_name=["m", "m", ""]), "metric_name", 2, "metric_name is empty",
                 id="empty-name"),
    pytest.param(_frame(value=[1.0, math.nan, 3.0]), "value", 1, "value is NaN", id="nan"),
    pytest.param(_frame(value=[1.0, 2.0, -math.inf]), "value", 2, "value is infinite",
                 id="infinity"),
    pytest.param(_frame(value=[None, 2.0, 3.0]), "value", 0, "value is null", id="null-value"),
    pytest.param(_frame(timestamp=[T0, None, T0]), "timestamp", 1, "timestamp is null",
                 id="null-timestamp"),
    pytest.param(pl.DataFrame({"timestamp": pl.Series([0, -300_000_000_000_000_000],
                                                       dtype=pl.Datetime("us", "UTC")),
                               "metric_name": ["m", "m"], "value": [1.0, 2.0]}),
                 "timestamp", 1, "outside the range agts stores", id="before-4713-bc"),
    pytest.param(pl.DataFrame({"timestamp": pl.Series([0, -62_104_060_800_000_001],
                                                       dtype=pl.Datetime("us", "UTC")),
                               "metric_name": ["m", "m"], "value": [1.0, 2.0]}),
                 "timestamp", 1, "outside the range agts stores",
                 id="one-microsecond-before-year-2"),
    pytest.param(pl.DataFrame({"timestamp": pl.Series([0, 253_370_764_800_000_000],
                                                       dtype=pl.Datetime("us", "UTC")),
                               "metric_name": ["m", "m"], "value": [1.0, 2.0]}),
                 "timestamp", 1, r"\(0002-01-01 to 9998-12-31 UTC\)", id="year-9999"),
    pytest.param(pl.DataFrame({"timestamp": pl.Series([0, 9_223_371_331_199_999_999],
                                                       dtype=pl.Datetime("us", "UTC")),
                               "metric_name": ["m", "m"], "value": [1.0, 2.0]}),
                 "timestamp", 1, "outside the range agts stores", id="year-294247"),
    pytest.param(_frame(labels=['{"a": "1"}', "{not json", '{"a": "1"}']), "labels", 1,
                 "labels are not JSON", id="bad-json"),
    pytest.param(_frame(labels=['{"a": "1"}', '{"a": "1"}', '{"a": {"b": 1}}']), "labels", 2,
                 "label 'a' must have a string value", id="nested-label"),
    pytest.param(_frame(labels=['{"a": "1"}', json.dumps({f"k{i}": "v" for i in range(33)}),
                                '{"a": "1"}']), "labels", 1, "at most 32 labels",
                 id="too-many-labels"),
    pytest.param(_frame(labels=['{"a": "1"}', '{"a": "1"}', json.dumps({"a": "x" * 5000})]),
                 "labels", 2, "at most 4096 bytes", id="oversize-labels"),
    pytest.param(_frame(labels=['["a"]', '{"a": "1"}', '{"a": "1"}']), "labels", 0,
                 "labels must be an object", id="labels-not-object"),
])
def test_validation_errors(engine: agts.StorageEngine, data: Any, column: str, row: int | None,
                           match: str) -> None:
    with pytest.raises(agts.ValidationError, match=match) as info:
        engine.insert_metrics_batch(data)
    assert (info.value.column, info.value.row) == (column, row)
    if row is not None:
        assert f"row {row}" in str(info.value)
    assert stored(engine) == []


def test_skip_mode_stores_the_rest_and_returns_the_refused(engine: agts.StorageEngine) -> None:
    frame = _frame(value=[1.0, math.nan, 3.0], metric_name=["m", "m", None])
    result = engine.insert_metrics_batch(frame, on_error="skip")
    assert result.rows_written == 1
    assert result.skipped.select("row", "error").to_dicts() == [
        {"row": 1, "error": "value: value is NaN (agts refuses NaN and infinities)"},
        {"row": 2, "error": "metric_name: metric_name is null"},
    ]
    assert result.skipped.columns == ["row", "error", "timestamp", "metric_name", "value", "labels"]
    assert stored(engine) == [(T0, "m", 1.0, {"a": "1"})]


def test_wrong_input_type_and_option(engine: agts.StorageEngine) -> None:
    with pytest.raises(agts.ValidationError, match="must be a polars or pandas DataFrame"):
        engine.insert_metrics_batch(42)
    with pytest.raises(ValueError, match="on_error must be one of"):
        engine.insert_metrics_batch(_polars(), on_error="ignore")  # type: ignore[arg-type]


def test_timestamps_truncate_to_the_microsecond_towards_the_past(
    engine: agts.StorageEngine,
) -> None:
    ns = pl.Series([-1_500, 1_999], dtype=pl.Datetime("ns", "UTC"))
    engine.insert_metrics_batch(pl.DataFrame({"timestamp": ns, "metric_name": ["m", "m"],
                                              "value": [1.0, 2.0]}))
    epoch = dt.datetime(1970, 1, 1, tzinfo=UTC)
    assert [r[0] for r in stored(engine)] == [epoch - dt.timedelta(microseconds=2),
                                             epoch + dt.timedelta(microseconds=1)]


def test_stored_and_repeated_points_in_one_batch_are_merged_once(
    engine: agts.StorageEngine,
) -> None:
    first = engine.insert_metrics_batch(_polars())
    assert (first.rows_written, first.duplicates) == (4, 0)
    frame = pl.concat([_polars(), _polars().with_columns(pl.col("value") + 1)])
    again = engine.insert_metrics_batch(frame.with_columns(
        pl.col("timestamp") + pl.duration(seconds=pl.int_range(pl.len()) // 6)))
    # Rows 0-3 are stored already, rows 4-5 repeat rows 0-1 in the batch; rows 6-7 are new.
    assert (again.rows_written, again.duplicates) == (2, 6)
    with engine.db.connection() as conn:
        ledger = conn.execute("SELECT rows, duplicates, method FROM agts.ingest_batches "
                              "ORDER BY ingested_at").fetchall()
    assert ledger == [(4, 0, "copy"), (2, 6, "merge")]
    assert len(stored(engine)) == 6


@pytest.mark.parametrize("zone", ["UTC", "Etc/GMT+5", "Etc/GMT-9"])
def test_the_first_and_last_instants_agts_takes_are_stored_and_maintained(
        engine: agts.StorageEngine, tmp_path: Path, zone: str) -> None:
    """The door's range is what agts can store *and read back*: points at its two ends, given in
    any time zone, are stored, and rollups, archive and the storage report still work (a point
    before year 1 or after 9999 broke each of them)."""
    frame = pl.DataFrame({
        "timestamp": pl.Series([-62_104_060_800_000_000, 253_370_764_799_999_999],
                               dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(zone),
        "metric_name": ["edge", "edge"], "value": [1.0, 2.0]})
    assert engine.insert_metrics_batch(frame).rows_written == 2
    with engine.db.connection() as conn:
        rows = conn.execute("SELECT _timescaledb_functions.to_unix_microseconds(time), value "
                            "FROM agts.metric_points ORDER BY time").fetchall()
    assert rows == [(-62_104_060_800_000_000, 1.0), (253_370_764_799_999_999, 2.0)]
    engine.refresh_rollups()
    assert engine.storage_report().height > 0
    report = engine.archive("metrics", dt.datetime(1, 1, 1, tzinfo=UTC),
                            dt.datetime(3, 1, 1, tzinfo=UTC), drop=True, root=str(tmp_path))
    assert report.rows_exported == 1
    assert engine.query_metrics("edge", dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(
        9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), tiers="all")["value"].to_list() == [1.0, 2.0]
    engine.run_retention(dry_run=True)  # reads every chunk range back


@pytest.mark.parametrize("size", [2_704, 3_000, 4_000])
def test_a_label_set_of_any_accepted_size_is_stored(engine: agts.StorageEngine, size: int) -> None:
    """Label sets up to the 4 KiB limit are stored with the rest of their batch (a b-tree key on
    the labels refused entries past 2,704 bytes and took the whole batch with it)."""
    note = "".join(random.Random(size).choices(string.ascii_letters, k=size - len('{"note":""}')))
    text = json.dumps({"note": note}, separators=(",", ":"))  # incompressible, unlike "x" * n
    assert len(text.encode()) == size
    rows = [(T0 + dt.timedelta(seconds=i), "m", float(i), '{"host":"a"}') for i in range(50)]
    rows.insert(25, (T0, "m", -1.0, text))
    frame = pl.DataFrame(rows, schema=["timestamp", "metric_name", "value", "labels"],
                         orient="row")
    result = engine.insert_metrics_batch(frame, on_error="skip")
    assert (result.rows_written, result.skipped.height) == (51, 0)
    big = engine.query_metrics("m", T0, T0 + dt.timedelta(minutes=1), labels={"note": note})
    assert big.select("timestamp", "value").rows() == [(T0, -1.0)]
    assert engine.insert_metrics_batch(frame).duplicates == 51  # the same series again, by key
    with engine.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM agts.series").fetchone() == (2,)


def test_series_are_one_per_name_and_labels(engine: agts.StorageEngine) -> None:
    """The hash key compares names and labels themselves: names that end like a label text and
    labels that differ only in one key are different series."""
    points = [agts.MetricPoint(T0, name, 1.0, labels) for name, labels in [
        ("m", {"a": "1"}), ("m", {"a": "2"}), ("m{}", {}), ("m", {}), ("'m'", {}), ("m", {"a": "1"}),
    ]]
    engine.insert_metrics_batch(points)
    with engine.db.connection() as conn:
        rows = conn.execute("SELECT metric_name, labels::text FROM agts.series").fetchall()
    assert sorted(rows) == sorted([("'m'", "{}"), ("m", "{}"), ("m", '{"a": "1"}'),
                                   ("m", '{"a": "2"}'), ("m{}", "{}")])
