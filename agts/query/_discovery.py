"""Discovery: what exists. Metric names, the series of a metric, label keys and label values, as
Polars frames, from ``agts.series`` and the per-series summary ``agts.series_latest`` (migration
0009: first and last timestamp, a point count estimate) — never a scan of the points.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from agts.db._database import Database
from agts.query._series import SeriesResolver, label_struct, series_filter

__all__ = ["label_keys", "label_values", "metric_names", "series_of"]

_TIME = pl.Datetime("us", "UTC")


def metric_names(db: Database) -> pl.DataFrame:
    """One row per metric: ``metric_name``, ``series``, ``first_timestamp``, ``last_timestamp``,
    ``points_estimate``; by name."""
    with db.read_connection("list metric names") as conn:
        rows = conn.execute(
            "SELECT s.metric_name, count(*), min(l.first_time), max(l.time), "
            "coalesce(sum(l.points), 0) FROM agts.series AS s "
            "LEFT JOIN agts.series_latest AS l USING (series_id) GROUP BY 1 ORDER BY 1").fetchall()
    return pl.DataFrame(rows, orient="row", schema={
        "metric_name": pl.String, "series": pl.Int64, "first_timestamp": _TIME,
        "last_timestamp": _TIME, "points_estimate": pl.Int64})


def series_of(db: Database, resolver: SeriesResolver, names: Sequence[str],
              labels: dict[str, str], labels_in: dict[str, list[str]]) -> pl.DataFrame:
    """One row per matching series: ``series_id``, ``metric_name``, ``labels`` (struct),
    ``first_timestamp``, ``last_timestamp``, ``points_estimate``; by series id."""
    found = resolver.resolve(names, labels, labels_in)
    ids = found.get_column("series_id").to_list()
    with db.read_connection("list metric series") as conn:
        rows = conn.execute(
            "SELECT series_id, first_time, time, points FROM agts.series_latest "
            "WHERE series_id = ANY(%s::int[])", [ids]).fetchall() if ids else []
    summary = pl.DataFrame(rows, orient="row", schema={
        "series_id": pl.Int32, "first_timestamp": _TIME, "last_timestamp": _TIME,
        "points_estimate": pl.Int64})
    out = found.select("series_id", "metric_name", label_struct(found.get_column("labels_json")))
    return out.join(summary, on="series_id", how="left", maintain_order="left").with_columns(
        pl.col("points_estimate").fill_null(0))


def label_keys(db: Database, names: Sequence[str] | None) -> pl.DataFrame:
    """One row per label key: ``key``, ``series`` (how many series have it), ``metrics``; by key."""
    where, params = series_filter(names, {}, {}, alias="s.")
    with db.read_connection("list label keys") as conn:
        rows = conn.execute(
            "SELECT k, count(*), count(DISTINCT s.metric_name) FROM agts.series AS s, "
            f"jsonb_object_keys(s.labels) AS k WHERE {where} GROUP BY 1 ORDER BY 1",
            params).fetchall()
    return pl.DataFrame(rows, orient="row", schema={
        "key": pl.String, "series": pl.Int64, "metrics": pl.Int64})


def label_values(db: Database, key: str, names: Sequence[str] | None, labels: dict[str, str],
                 labels_in: dict[str, list[str]]) -> pl.DataFrame:
    """One row per value of label ``key`` among the matching series: ``value``, ``series``; by
    value."""
    where, params = series_filter(names, labels, labels_in, alias="s.")
    with db.read_connection(f"list the values of label {key!r}") as conn:
        rows = conn.execute(
            "SELECT s.labels ->> %s, count(*) FROM agts.series AS s "
            f"WHERE s.labels ? %s AND {where} GROUP BY 1 ORDER BY 1",
            [key, key, *params]).fetchall()
    return pl.DataFrame(rows, orient="row", schema={"value": pl.String, "series": pl.Int64})
