"""Bucketed aggregation SQL, over raw points or over a rollup plus the raw tail, and gap filling.

Buckets are ``time_bucket(bucket, time, '1970-01-01 UTC')``: aligned to the Unix epoch in UTC (so
``"1d"`` buckets start at UTC midnight and ``"1w"`` buckets on Thursdays); a bucket is labelled by
its start. Only points in ``[start, end)`` count, so the first and last bucket may be partial.

Definitions (the same on every path): ``stddev`` is the sample standard deviation (n - 1; null for
a single point), percentiles are continuous (``percentile_cont``: linear interpolation between
closest ranks, as Polars' ``quantile(..., "linear")``), ``first``/``last`` are the values at the
earliest/latest timestamp (ties between different series are broken arbitrarily).

A rollup row holds, per (bucket, series): ``n``, ``total``, ``mn``, ``mx``, ``m2`` (the sum of
squared deviations from the row's mean), and the first/last value with their times. Rows combine
exactly into any coarser bucket: counts, sums, min and max directly; ``m2`` with the parallel
variance formula ``M2 = sum(m2_i) + sum(n_i * (mean_i - mean)^2)``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import polars as pl

from agts.query._args import EPOCH, AggSpec

__all__ = ["ORIGIN", "gap_fill", "raw_sql", "result_schema", "rollup_sql"]

ORIGIN = EPOCH

_RAW_AGG = {
    "avg": "avg(p.value)",
    "min": "min(p.value)",
    "max": "max(p.value)",
    "sum": "sum(p.value)",
    "count": "count(*)",
    "first": "first(p.value, p.time)",
    "last": "last(p.value, p.time)",
    "stddev": "stddev_samp(p.value)",
}

_ROLLUP_AGG = {
    "avg": "sum(w.total) / sum(w.n)",
    "min": "min(w.mn)",
    "max": "max(w.mx)",
    "sum": "sum(w.total)",
    "count": "sum(w.n)::bigint",
    "first": "first(w.first_value, w.first_time)",
    "last": "last(w.last_value, w.last_time)",
    "stddev": ("CASE WHEN sum(w.n) > 1 THEN sqrt(greatest(sum(w.m2 + w.n * (w.total / w.n - "
               "w.gmean) ^ 2), 0) / (sum(w.n) - 1)) END"),
}

#: Per (small bucket, series) statistics from raw points: the rollup's own columns.
PARTIAL_COLUMNS = ("count(*) AS n, sum(p.value) AS total, min(p.value) AS mn, max(p.value) AS mx, "
                   "var_pop(p.value) * count(*) AS m2, min(p.time) AS first_time, "
                   "first(p.value, p.time) AS first_value, max(p.time) AS last_time, "
                   "last(p.value, p.time) AS last_value")
ROLLUP_COLUMNS = "n, total, mn, mx, m2, first_time, first_value, last_time, last_value"


def _group_join(alias: str, grouped: bool, param: int) -> tuple[str, list[str]]:
    """``JOIN unnest($ids, $gids) AS m(series_id, gid)``: each series' group number (numbered in
    the order of the group values, so ordering by number orders by value: integers group and
    sort several times faster than text)."""
    if not grouped:
        return "", []
    join = (f" JOIN unnest($1::int[], ${param}::int[]) AS m(series_id, gid) "
            f"ON m.series_id = {alias}.series_id")
    return join, ["m.gid"]


def raw_sql(specs: tuple[AggSpec, ...], grouped: bool) -> str:
    """Aggregate raw points. Parameters: $1 series ids, $2 start, $3 end, $4 bucket, $5 origin,
    ($6 the group number of each series,) then one fraction per percentile. With ``grouped``
    the result has a column ``g``, the group number."""
    join, gcols = _group_join("p", grouped, 6)
    param = 6 + len(gcols)
    aggs = []
    for spec in specs:
        if spec.fraction is not None:
            aggs.append(f'percentile_cont(${param}::float8) WITHIN GROUP (ORDER BY p.value) '
                        f'AS "{spec.name}"')
            param += 1
        else:
            aggs.append(f'{_RAW_AGG[spec.name]} AS "{spec.name}"')
    keys = ", ".join(str(i) for i in range(1, 2 + len(gcols)))
    select = ", ".join(["time_bucket($4::interval, p.time, $5::timestamptz) AS \"timestamp\"",
                        *(f"{col} AS g" for col in gcols), *aggs])
    return (f"SELECT {select} FROM agts.metric_points AS p{join} "
            "WHERE p.series_id = ANY($1::int[]) AND p.time >= $2 AND p.time < $3 "
            f"GROUP BY {keys} ORDER BY {keys}")


def _parts(table: str, *, ids: list[int], start: datetime, end: datetime, bucket: timedelta,
           width: timedelta, watermark: datetime, dirty: str) -> tuple[str, list[Any]]:
    """The rows a rollup answer combines, as a ``UNION ALL`` (columns ``bucket, series_id`` and
    :data:`ROLLUP_COLUMNS`): the rollup's rows plus partials of the raw points it does not hold
    yet (the tail from the watermark on, the ``dirty`` buckets). Parameters $1 ids, $2 start,
    $3 end, $4 bucket, $5 origin, $6 watermark, then what the branches need."""
    params: list[Any] = [ids, start, end, bucket, ORIGIN, watermark]

    def bind(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    tail, late = watermark < end, dirty != "{}"
    d = bind(dirty) if late else ""
    w = bind(width) if tail or late else ""
    branches = [
        f"SELECT r.bucket, r.series_id, {', '.join('r.' + c for c in ROLLUP_COLUMNS.split(', '))} "
        f"FROM {table} AS r WHERE r.series_id = ANY($1::int[]) AND r.bucket >= $2 "
        "AND r.bucket < LEAST($3, $6::timestamptz)"
        + (f" AND NOT ({d}::tstzmultirange @> r.bucket)" if late else "")
    ]
    raw = (f"SELECT time_bucket({w}::interval, p.time) AS bucket, p.series_id, "
           f"{PARTIAL_COLUMNS} FROM agts.metric_points AS p WHERE p.series_id = ANY($1::int[]) "
           "AND p.time >= $2 AND p.time < $3 AND {cond} GROUP BY 1, 2")
    if tail:
        branches.append(raw.format(cond="p.time >= $6::timestamptz"))
    if late:
        branches.append(raw.format(cond=(
            f"p.time >= lower({d}::tstzmultirange) AND p.time < upper({d}::tstzmultirange) "
            f"AND {d}::tstzmultirange @> p.time AND p.time < $6::timestamptz")))
    return " UNION ALL ".join(branches), params


def rollup_sql(
    table: str, specs: tuple[AggSpec, ...], gids: list[int] | None, *, ids: list[int],
    start: datetime, end: datetime, bucket: timedelta, width: timedelta, watermark: datetime,
    dirty: str,
) -> tuple[str, list[Any]]:
    """Aggregate a rollup's rows plus the raw points it does not hold yet: the tail from the
    watermark on, and the ``dirty`` buckets (a ``tstzmultirange`` literal) of ingest batches it
    has not seen. ``table`` is a constant of :mod:`agts.query._rollups`; ``gids``, the group
    number of each series (None: no groups). Returns SQL and parameters; a branch that has
    nothing to read is left out (so chunk exclusion stays simple)."""
    parts, params = _parts(table, ids=ids, start=start, end=end, bucket=bucket, width=width,
                           watermark=watermark, dirty=dirty)
    join, gcols = _group_join("parts", gids is not None, len(params) + 1)
    if gids is not None:
        params.append(gids)
    gnames = ["g"] if gids is not None else []
    partition = ", ".join(["b", *gnames])
    aggs = ", ".join(f'{_ROLLUP_AGG[spec.name]} AS "{spec.name}"' for spec in specs)
    keys = ", ".join(str(i) for i in range(1, 2 + len(gnames)))
    query = (
        f"WITH parts AS ({parts}), g AS ("
        "SELECT time_bucket($4::interval, parts.bucket, $5::timestamptz) AS b"
        + "".join(f", {col} AS {name}" for col, name in zip(gcols, gnames, strict=True))
        + f", {ROLLUP_COLUMNS} FROM parts{join}"
        "), w AS ("
        f"SELECT g.*, sum(g.total) OVER k / sum(g.n) OVER k AS gmean FROM g "
        f"WINDOW k AS (PARTITION BY {partition})"
        ") "
        f"SELECT b AS \"timestamp\"{''.join(', ' + n for n in gnames)}, {aggs} FROM w "
        f"GROUP BY {keys} ORDER BY {keys}"
    )
    return query, params


#: The rollup columns each aggregation combines from (what :func:`rollup_parts_sql` returns).
_PART_NEEDS = {"avg": ("n", "total"), "min": ("mn",), "max": ("mx",), "sum": ("total",),
               "count": ("n",), "first": ("first_time", "first_value"),
               "last": ("last_time", "last_value")}


def combines_in_polars(specs: tuple[AggSpec, ...]) -> bool:
    """Whether :func:`combine_parts` can combine these aggregations (stddev stays in SQL)."""
    return all(spec.name in _PART_NEEDS for spec in specs)


def rollup_parts_sql(table: str, specs: tuple[AggSpec, ...], *, ids: list[int],
                     start: datetime, end: datetime, bucket: timedelta, width: timedelta,
                     watermark: datetime, dirty: str) -> tuple[str, list[Any]]:
    """The rows :func:`rollup_sql` would combine, uncombined: ``bucket, series_id`` and the
    columns ``specs`` need, for :func:`combine_parts`. A server's hash aggregate of many small
    groups costs more than sending their rows (12,000 one-row groups: ~8 ms of aggregate, ~5 ms
    to send them and ~1 ms to combine them in Polars)."""
    parts, params = _parts(table, ids=ids, start=start, end=end, bucket=bucket, width=width,
                           watermark=watermark, dirty=dirty)
    needed = dict.fromkeys(c for spec in specs for c in _PART_NEEDS[spec.name])
    # $4 and $5 (bucket, origin) are the combining's, done in Polars: typed here all the same,
    # so a server-side bind of the shared parameter list stays valid (a constant predicate).
    return (f"SELECT parts.bucket, parts.series_id, {', '.join('parts.' + c for c in needed)} "
            f"FROM ({parts}) AS parts WHERE $4::interval IS NOT NULL "
            "AND $5::timestamptz IS NOT NULL"), params


def combine_parts(parts: pl.DataFrame, specs: tuple[AggSpec, ...], bucket: timedelta,
                  groups: pl.DataFrame | None) -> pl.DataFrame:
    """Combine rows of :func:`rollup_parts_sql` per bucket of ``bucket`` (epoch-aligned, as
    ``time_bucket``) and group as :func:`rollup_sql` does: columns ``timestamp``, ``g`` (with
    ``groups``: ``series_id`` → ``g``) and one per spec, ordered by bucket and group."""
    step = bucket // timedelta(microseconds=1)
    frame = parts.with_columns(
        (pl.col("bucket").dt.epoch("us") // step * step).cast(pl.Datetime("us", "UTC"))
        .alias("timestamp"))
    keys = ["timestamp"]
    if groups is not None:
        frame = frame.join(groups, on="series_id", how="inner")
        keys.append("g")
    combined = {
        "avg": pl.col("total").sum() / pl.col("n").sum(),
        "min": pl.col("mn").min(),
        "max": pl.col("mx").max(),
        "sum": pl.col("total").sum(),
        "count": pl.col("n").sum(),
        "first": pl.col("first_value").sort_by("first_time").first(),
        "last": pl.col("last_value").sort_by("last_time").last(),
    }
    return frame.group_by(keys).agg(
        [combined[spec.name].alias(spec.name) for spec in specs]).sort(keys)


def result_schema(specs: tuple[AggSpec, ...], group_by: list[str]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"timestamp": pl.Datetime("us", "UTC")}
    schema.update({key: pl.String() for key in group_by})
    for spec in specs:
        schema[spec.name] = pl.Int64() if spec.name == "count" else pl.Float64()
    return schema


def gap_fill(
    frame: pl.DataFrame, *, start: datetime, end: datetime, bucket: timedelta,
    group_by: list[str], fill: str,
) -> pl.DataFrame:
    """Add the empty buckets of ``[start, end)`` (per group present in ``frame``): ``count`` 0,
    other aggregations null (``fill="null"``) or the group's previous bucket's value
    (``fill="forward"``; nothing is carried into the range from before ``start``)."""
    if start >= end:
        return frame
    step = bucket // timedelta(microseconds=1)
    first = ((start - ORIGIN) // timedelta(microseconds=1)) // step * step
    last = ((end - ORIGIN) // timedelta(microseconds=1) - 1) // step * step
    stamps = pl.DataFrame({"timestamp": pl.int_range(first, last + 1, step, eager=True)}).select(
        pl.col("timestamp").cast(pl.Datetime("us", "UTC")))
    grid = stamps.join(frame.select(group_by).unique(), how="cross") if group_by else stamps
    if group_by and frame.is_empty():
        return frame
    marked = frame.with_columns(pl.lit(True).alias("_present"))
    full = grid.join(marked, on=["timestamp", *group_by], how="left", nulls_equal=True)
    full = full.sort([*group_by, "timestamp"], nulls_last=True)
    values = [c for c in frame.columns if c not in ("timestamp", *group_by)]
    fills = []
    for col in values:
        if col == "count":
            fills.append(pl.col(col).fill_null(0))
        elif fill == "forward":
            carried = pl.col(col).forward_fill()
            carried = carried.over(group_by) if group_by else carried
            fills.append(pl.when(pl.col("_present")).then(pl.col(col)).otherwise(carried))
    if fills:
        full = full.with_columns(fills)
    return full.sort(["timestamp", *group_by], nulls_last=True).select(frame.columns)
