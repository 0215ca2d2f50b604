"""The cold side of metric queries (``tiers="cold" | "all"``), for :class:`MetricsQueries`.

The hot tier is TimescaleDB; the cold tier is what :meth:`agts.archive.ColdTier.series_points`
reads: the files of units in state ``dropped``, whose rows are gone from the hot tier. A unit that
was restored is ``verified`` again and read from the hot tier only, so ``hot ∪ cold`` holds every
row once and a range spanning the archive boundary comes back with no gap and no overlap.

Cold rows carry the ``series_id`` of ``agts.series`` (series rows are never deleted when chunks are
dropped), so label filters resolve to series ids once, for both tiers, and the cold read prunes
the files' row groups on them; files written before ``series_id`` was archived (schema version 1)
are matched to their series by metric name and labels. Aggregations over
buckets the cold tier touches are computed in Polars from the raw rows of both tiers, with the
definitions of :mod:`agts.query._aggregate`; buckets outside that span keep the SQL path.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import polars as pl

from agts.archive import ColdTier
from agts.query import _aggregate as agg
from agts.query._args import AggSpec

__all__ = ["POINTS", "aggregate_points", "bucket_floor", "cold_points", "once"]

POINTS: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"), "series_id": pl.Int32(), "value": pl.Float64()}


def _entries_key(labels: dict[str, str]) -> str:
    # Neither keys nor values may hold NUL (checked at ingest), so this is unambiguous.
    return "".join(f"{k}\x00{v}\x00" for k, v in sorted(labels.items()))


def cold_points(cold: ColdTier | None, series: pl.DataFrame, start: datetime,
                end: datetime, *, ordered: bool = True) -> pl.DataFrame:
    """``timestamp, series_id, value`` of ``series`` in ``[start, end)`` from dropped units only,
    ordered by (timestamp, series_id) unless ``ordered`` is False (an aggregation needs no
    order, and sorting a day of a metric's points costs more than reading them)."""
    if cold is None:
        return pl.DataFrame(schema=POINTS)
    names = sorted(set(series.get_column("metric_name").to_list()))
    points, legacy = cold.series_points(names, start, end,
                                        series.get_column("series_id").to_list())
    parts = []
    if legacy is not None and not legacy.is_empty():
        parts.append(_by_labels(legacy, series))  # archived before the files with series ids
    if points is not None and not points.is_empty():
        parts.append(points)
    if not parts:
        return pl.DataFrame(schema=POINTS)
    frame = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical_relaxed").unique(
        ["series_id", "timestamp"], keep="first", maintain_order=True)
    return frame.sort("timestamp", "series_id") if ordered else frame


def _by_labels(rows: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """Cold rows without ``series_id`` (files of schema version 1) matched to ``series`` by
    metric name and labels."""
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
    points = rows.drop("series_id", strict=False).join(keys, on=["metric_name", "_key"],
                                                       how="inner")
    return points.select(
        pl.col("timestamp").cast(POINTS["timestamp"]), pl.col("series_id").cast(pl.Int32),
        pl.col("value").cast(pl.Float64)).sort("timestamp", "series_id")


def once(cold: pl.DataFrame, hot: pl.DataFrame) -> pl.DataFrame:
    """Cold rows followed by hot rows, each point key ``(series_id, timestamp)`` kept once: the
    first, the archived one. A point written into a range after it was archived and dropped is
    stored in the hot tier again; as within the hot tier, the first write wins."""
    if cold.is_empty() or hot.is_empty():
        return hot if cold.is_empty() else cold
    return pl.concat([cold, hot]).unique(["series_id", "timestamp"], keep="first",
                                         maintain_order=True)


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


def aggregate_points(points: pl.DataFrame, groups: pl.DataFrame, width: timedelta,
                     specs: tuple[AggSpec, ...], keys: list[str]) -> pl.DataFrame:
    """Bucket ``timestamp, series_id, value`` like ``time_bucket(width, time, epoch)`` and
    aggregate per bucket and group (``groups``: ``series_id`` and each series' value of the
    group columns ``keys``), as :func:`agts.query._aggregate.raw_sql` does."""
    schema = agg.result_schema(specs, keys)
    if points.is_empty():
        return pl.DataFrame(schema=schema)
    step = width // timedelta(microseconds=1)
    bucketed = points.join(groups, on="series_id", how="left").with_columns(
        (pl.col("timestamp").dt.epoch("us") // step * step).cast(pl.Datetime("us", "UTC"))
        .alias("_bucket"))
    frame = bucketed.group_by("_bucket", *keys).agg(
        [_polars_agg(s) for s in specs]).rename({"_bucket": "timestamp"})
    return frame.select([pl.col(c).cast(t) for c, t in schema.items()]).sort(
        ["timestamp", *keys], nulls_last=True)


def bucket_floor(value: datetime, width: timedelta) -> datetime:
    """The start of the bucket of ``width`` that holds ``value``."""
    return agg.ORIGIN + (value - agg.ORIGIN) // width * width
