"""Small results are read over psycopg (agts.db._small) and must be exactly what ADBC returns:
the same columns, Arrow types, values and nulls; anything the fast path cannot convert falls back
to ADBC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts

CASES = [
    pytest.param(
        "SELECT t AS \"timestamp\", t::timestamp AS naive, v, n, i, s, b, h "
        "FROM (VALUES ($1::timestamptz, 1.5::float8, 7::int8, 3::int4, 'α'::text, true, 2::int2),"
        " ($2::timestamptz, NULL, NULL, NULL, NULL, NULL, NULL),"
        " ($3::timestamptz, 'NaN'::float8, -9::int8, -1::int4, '', false, -2::int2)) "
        "AS x(t, v, n, i, s, b, h) ORDER BY t",
        [datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=UTC),
         datetime(2026, 1, 1, tzinfo=UTC), datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC)],
        id="types-nulls-extremes"),
    pytest.param("SELECT 7 % 3 AS m, $1::text AS pct", ["100%"], id="percent-signs"),
    pytest.param("SELECT x::float8 AS x FROM generate_series(1, 0) AS x", [], id="empty"),
    pytest.param("SELECT '{\"a\": 1}'::jsonb AS j, 1.25::numeric AS n, $1::date AS d",
                 [datetime(2026, 3, 1).date()], id="other-types-fall-back"),
    pytest.param("SELECT time_bucket($1::interval, $2::timestamptz) AS b, $3::int[] AS ids",
                 [timedelta(minutes=5), datetime(2026, 1, 1, 0, 7, tzinfo=UTC), [1, 2]],
                 id="bound-interval-array"),
]


@pytest.mark.parametrize(("query", "params"), CASES)
def test_the_psycopg_path_returns_what_adbc_returns(engine: agts.StorageEngine, query: str,
                                                    params: list[object]) -> None:
    small = engine.db.fetch_arrow(query, params, action="test", rows_hint=10)
    bulk = engine.db.fetch_arrow(query, params, action="test")
    assert small.schema.names == bulk.schema.names
    left, right = pl.from_arrow(small), pl.from_arrow(bulk)
    assert isinstance(left, pl.DataFrame) and isinstance(right, pl.DataFrame)
    assert_frame_equal(left, right)


def test_errors_on_the_psycopg_path_are_storage_errors(engine: agts.StorageEngine) -> None:
    with pytest.raises(agts.QueryError) as caught:
        engine.db.fetch_arrow("SELECT 1 / (0 * $1::int) AS x", [3], action="run the test",
                              rows_hint=1)
    assert "division by zero" in str(caught.value)
    assert str(caught.value).startswith("run the test failed: ")


def test_small_and_large_queries_agree(engine: agts.StorageEngine) -> None:
    """The same question answered over psycopg (few rows) and ADBC (many) gives the same rows."""
    t0 = datetime(2026, 2, 1, tzinfo=UTC)
    frame = pl.DataFrame({
        "timestamp": [t0 + timedelta(seconds=i) for i in range(3000)],
        "metric_name": "small_vs_large", "value": [float(i % 97) for i in range(3000)],
        "labels": ['{"k": "a"}' if i % 2 else '{"k": "b"}' for i in range(3000)]})
    engine.insert_metrics_batch(frame)
    few = engine.query_metrics("small_vs_large", t0, t0 + timedelta(seconds=100))
    many = engine.query_metrics("small_vs_large", t0, t0 + timedelta(seconds=3000))
    assert few.height == 100 and many.height == 3000
    assert_frame_equal(few, many.head(100))
    bars = engine.query_aggregated("small_vs_large", t0, t0 + timedelta(seconds=3000), "1m",
                                   ["avg", "max", "count"], group_by=["k"])
    expected = (many.with_columns(pl.col("labels").struct.field("k"))
                .group_by(pl.col("timestamp").dt.truncate("1m"), "k")
                .agg(pl.col("value").mean().alias("avg"), pl.col("value").max().alias("max"),
                     pl.len().cast(pl.Int64).alias("count"))
                .sort("timestamp", "k"))
    assert_frame_equal(bars, expected, check_exact=False)


HOSTILE = ["it's", "back\\slash", "ünï ✓", 'a"b', "100%", "$1", "-- x", "'; DROP TABLE t; --",
           "\t\n"]


@pytest.mark.parametrize("rows_hint", [None, 10], ids=["adbc", "psycopg"])
def test_values_reach_the_server_exactly(engine: agts.StorageEngine,
                                         rows_hint: int | None) -> None:
    """ADBC statements carry their values as literals (its one-round-trip path) and the small
    path binds them: either way every value arrives as sent."""
    from datetime import date

    values: list[object] = [*HOSTILE, float("nan"), float("-inf"), -1.5, 1e-300, 2**40, True,
                            None, datetime(2, 1, 1, tzinfo=UTC),
                            datetime(2026, 1, 1, 12, 30, 0, 123456),
                            timedelta(days=1, microseconds=7), timedelta(seconds=-90),
                            date(2026, 3, 1), [1, -2, 3], []]
    casts = [*(["text"] * len(HOSTILE)), "float8", "float8", "float8", "float8", "int8", "bool",
             "text", "timestamptz", "timestamp", "interval", "interval", "date", "int[]", "int[]"]
    select = ", ".join(f"(${i + 1}::{c})::text AS c{i}" for i, c in enumerate(casts))
    table = engine.db.fetch_arrow(f"SELECT {select}", values, action="test",
                                  rows_hint=rows_hint)
    with engine.db.connection() as conn:
        expected = conn.execute(
            "SELECT " + ", ".join(f"(%s::{c})::text" for c in casts), values).fetchone()
    assert tuple(table.to_pylist()[0].values()) == expected
