"""Hot ∪ cold for metric queries: ``tiers="hot" | "cold" | "all"``.

The hot tier is TimescaleDB; the cold tier is what :func:`agts.archive._cold.cold_files` lists:
the files of units in state ``dropped``, whose rows are gone from the hot tier. A unit that was
restored is ``verified`` again and read from the hot tier only, so ``hot ∪ cold`` holds every row
once and a range spanning the archive boundary comes back with no gap and no overlap.

Cold rows are put into the hot tier's shape by looking their series up in ``agts.series`` (series
rows are never deleted when chunks are dropped): the same ``series_id``, ``metric_name`` and label
struct as the hot rows, and label filters apply through the same series lookup. Aggregations over
buckets the cold tier touches are computed in Polars from the raw rows of both tiers, with the
definitions of :mod:`agts.query._aggregate`; buckets outside that span keep the SQL path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, get_args

import polars as pl

from agts.archive._cold import cold_files, read_cold
from agts.archive._tables import resolve
from agts.errors import ResultTooLargeError, ValidationError
from agts.query import _aggregate as agg
from agts.query._args import (
    AggSpec,
    Fill,
    check_labels,
    check_labels_in,
    check_metric_name,
    check_positive_int,
    check_range,
    parse_cursor,
)
from agts.query._raw import empty_raw, fetch_page, with_series
from agts.query._series import resolve_series
from agts.query._service import check_aggregated

if TYPE_CHECKING:
    from agts._engine import StorageEngine

__all__ = ["TIERS", "Tiers", "check_tiers", "cold_points", "query_aggregated", "query_metrics"]

log = logging.getLogger(__name__)

Tiers = Literal["hot", "cold", "all"]
TIERS: tuple[str, ...] = get_args(Tiers)

_POINTS: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"), "series_id": pl.Int32(), "value": pl.Float64()}

_ANY_DROPPED = """
SELECT 1 FROM agts.archive_units WHERE table_name = 'metrics' AND state = 'dropped'
  AND range_start < %s AND range_end > %s LIMIT 1
"""


def check_tiers(tiers: Any) -> str:
    """``tiers`` if it is one of :data:`TIERS`, else a :class:`~agts.ValidationError`."""
    if not isinstance(tiers, str) or tiers not in TIERS:
        raise ValidationError(f"tiers must be one of {TIERS!r}, got {tiers!r}")
    return tiers


def _entries_key(labels: dict[str, str]) -> str:
    # Neither keys nor values may hold NUL (checked at ingest), so this is unambiguous.
    return "".join(f"{k}\x00{v}\x00" for k, v in sorted(labels.items()))


def cold_points(engine: StorageEngine, series: pl.DataFrame, start: datetime,
                end: datetime) -> pl.DataFrame:
    """``timestamp, series_id, value`` of ``series`` in ``[start, end)`` from dropped units only,
    ordered by (timestamp, series_id)."""
    names = sorted(set(series.get_column("metric_name").to_list()))
    if not names or start >= end:
        return pl.DataFrame(schema=_POINTS)
    with engine.db.connection() as conn:
        # One look at the manifest (indexed) spares the catalog lookup of resolve() when no
        # dropped unit overlaps the range, the common case.
        if conn.execute(_ANY_DROPPED, [end, start]).fetchone() is None:
            return pl.DataFrame(schema=_POINTS)
        spec = resolve(conn, "metrics")
        one = names[0] if len(names) == 1 else None
        files = sorted(set(cold_files(conn, spec, start, end, one)))
    if not files:
        return pl.DataFrame(schema=_POINTS)
    rows = read_cold(engine, spec, files, start, end, metric_name=one)
    if one is None:
        rows = rows.filter(pl.col("metric_name").is_in(names))
    entry = pl.concat_str(pl.element().struct.field("key"), pl.lit("\x00"),
                          pl.element().struct.field("value"), pl.lit("\x00"))
    labels = pl.col("labels")
    if isinstance(rows.schema["labels"], pl.Map):
        labels = labels.map.entries()
    rows = rows.with_columns(labels.list.eval(entry.sort()).list.join("").alias("_key"))
    keys = pl.DataFrame({
        "metric_name": series.get_column("metric_name"),
        "_key": [_entries_key(json.loads(t)) for t in series.get_column("labels_json").to_list()],
        "series_id": series.get_column("series_id"),
    }, schema={"metric_name": pl.String, "_key": pl.String, "series_id": pl.Int32})
    points = rows.join(keys, on=["metric_name", "_key"], how="inner")
    return points.select(
        pl.col("timestamp").cast(_POINTS["timestamp"]), pl.col("series_id").cast(pl.Int32),
        pl.col("value").cast(pl.Float64)).sort("timestamp", "series_id")


# -- raw -------------------------------------------------------------------------------------

def query_metrics(
    engine: StorageEngine, metric_name: str, start: Any, end: Any, labels: Any, *,
    labels_in: Any, limit: int | None, after: str | None, iter_batches: bool, batch_size: int,
    tiers: str,
) -> pl.DataFrame | Iterator[pl.DataFrame]:
    """See :meth:`agts.StorageEngine.query_metrics`."""
    check_tiers(tiers)
    if tiers == "hot":
        return engine._queries().raw(metric_name, start, end, labels, labels_in=labels_in,
                                     limit=limit, after=after, iter_batches=iter_batches,
                                     batch_size=batch_size)
    if iter_batches:
        raise ValidationError(
            f"iter_batches=True reads the hot tier only, got tiers={tiers!r}; page with limit= "
            "and after= (supported with every tiers value), or pass tiers='hot'")
    name = check_metric_name(metric_name)
    start_utc, end_utc = check_range(start, end)
    label_map, in_map = check_labels(labels), check_labels_in(labels_in)
    max_results = engine.config.query.max_results
    if limit is not None:
        check_positive_int(limit, name="limit", maximum=max_results)
    cursor = parse_cursor(after)
    series = resolve_series(engine.db, [name], label_map, in_map)
    if series.is_empty() or start_utc >= end_utc:
        return empty_raw(series)
    cap = limit if limit is not None else max_results + 1
    parts = [cold_points(engine, series, start_utc, end_utc)]
    if cursor is not None:
        parts[0] = parts[0].filter((pl.col("timestamp") > cursor[0]) | (
            (pl.col("timestamp") == cursor[0]) & (pl.col("series_id") > cursor[1])))
    if tiers == "all":
        ids = series.get_column("series_id").to_list()
        parts.append(fetch_page(engine.db, ids, start_utc, end_utc, limit=cap, after=cursor,
                                server_order=limit is not None))
    points = pl.concat(parts).sort("timestamp", "series_id").head(cap)
    if limit is None and points.height > max_results:
        raise ResultTooLargeError(
            f"the query returns more than {max_results} rows (query.max_results); page with "
            "limit= and after=agts.next_cursor(page), narrow the time range or labels, or raise "
            "query.max_results")
    return with_series(points, series)


# -- aggregated ------------------------------------------------------------------------------

def _polars_agg(spec: AggSpec) -> pl.Expr:
    value = pl.col("value")
    if spec.fraction is not None:
        expr = value.quantile(spec.fraction, "linear")
    elif spec.name == "count":
        expr = pl.len()
    elif spec.name == "first":
        expr = value.sort_by("timestamp").first()
    elif spec.name == "last":
        expr = value.sort_by("timestamp").last()
    elif spec.name == "stddev":
        expr = value.std(ddof=1)
    else:
        expr = getattr(value, {"avg": "mean"}.get(spec.name, spec.name))()
    return expr.alias(spec.name)


def aggregate_points(points: pl.DataFrame, series: pl.DataFrame, width: timedelta,
                     specs: tuple[AggSpec, ...], keys: list[str]) -> pl.DataFrame:
    """Bucket ``timestamp, series_id, value`` like ``time_bucket(width, time, epoch)`` and
    aggregate per bucket (and label group), as :func:`agts.query._aggregate.raw_sql` does."""
    schema = agg.result_schema(specs, keys)
    if points.is_empty():
        return pl.DataFrame(schema=schema)
    step = width // timedelta(microseconds=1)
    label_sets = [json.loads(t) for t in series.get_column("labels_json").to_list()]
    groups = pl.DataFrame({"series_id": series.get_column("series_id"),
                           **{k: [ls.get(k) for ls in label_sets] for k in keys}},
                          schema={"series_id": pl.Int32, **dict.fromkeys(keys, pl.String)})
    bucketed = points.join(groups, on="series_id", how="left").with_columns(
        (pl.col("timestamp").dt.epoch("us") // step * step).cast(pl.Datetime("us", "UTC"))
        .alias("_bucket"))
    frame = bucketed.group_by("_bucket", *keys).agg(
        [_polars_agg(s) for s in specs]).rename({"_bucket": "timestamp"})
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()]).sort(
        ["timestamp", *keys], nulls_last=True)


def _bucket_floor(value: datetime, width: timedelta) -> datetime:
    return agg.ORIGIN + (value - agg.ORIGIN) // width * width


def query_aggregated(
    engine: StorageEngine, metric_name: str, start: Any, end: Any, bucket: Any, aggregation: Any,
    labels: Any, *, labels_in: Any, group_by: Any, fill: Fill | None, tiers: str,
) -> pl.DataFrame:
    """See :meth:`agts.StorageEngine.query_aggregated`.

    With ``tiers="all"`` the buckets from the first to the last cold row are aggregated in Polars
    from the raw rows of both tiers; the buckets before and after that span go through the hot
    query (rollups included). With no cold row in the range it is the hot query unchanged.
    """
    check_tiers(tiers)
    hot = engine._queries()
    if tiers == "hot":
        return hot.aggregated(metric_name, start, end, bucket, aggregation, labels,
                              labels_in=labels_in, group_by=group_by, fill=fill)
    a = check_aggregated(metric_name, start, end, bucket, aggregation, labels,
                         labels_in=labels_in, group_by=group_by, fill=fill,
                         max_results=engine.config.query.max_results)
    name, start_utc, end_utc, width, specs = a.name, a.start, a.end, a.width, a.specs
    label_map, in_map, keys = a.labels, a.labels_in, a.keys
    max_results = engine.config.query.max_results
    series = resolve_series(engine.db, [name], label_map, in_map)
    cold = cold_points(engine, series, start_utc, end_utc)
    if cold.is_empty() and tiers == "all":
        return hot.aggregated(name, start_utc, end_utc, width, aggregation, label_map,
                              labels_in=in_map or None, group_by=keys or None, fill=fill)
    parts = []
    if cold.is_empty() or tiers == "cold":
        parts.append(aggregate_points(cold, series, width, specs, keys))
    else:
        low = max(start_utc, _bucket_floor(cold.get_column("timestamp").min(), width))  # type: ignore[arg-type]
        high = min(end_utc, _bucket_floor(cold.get_column("timestamp").max(), width) + width)  # type: ignore[arg-type]
        ids = series.get_column("series_id").to_list()
        middle = pl.concat([cold, fetch_page(engine.db, ids, low, high, limit=None, after=None,
                                             server_order=False)])
        for lo, hi in ((start_utc, low), (high, end_utc)):
            if lo < hi:
                parts.append(hot.aggregated(name, lo, hi, width, aggregation, label_map,
                                            labels_in=in_map or None, group_by=keys or None))
        parts.append(aggregate_points(middle, series, width, specs, keys))
    frame = pl.concat(parts).sort(["timestamp", *keys], nulls_last=True)
    if fill is not None:
        frame = agg.gap_fill(frame, start=start_utc, end=end_utc, bucket=width, group_by=keys,
                             fill=fill)
    if frame.height > max_results:
        raise ResultTooLargeError(
            f"the query returns {frame.height} rows, more than {max_results} "
            "(query.max_results); use a coarser bucket, a shorter range or fewer groups, or "
            "raise query.max_results")
    return frame
