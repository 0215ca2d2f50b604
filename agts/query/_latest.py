"""Latest values: the newest point of every matching series, for dashboards and risk checks.

Without ``before``, one row per series is read from ``agts.series_latest`` (migration 0009: kept
by ingest in the batch's transaction, the newest point in any tier). With ``before``, the newest
point at or before it comes from one ``(series_id, time)`` index probe per series in the hot tier,
and from the cold tier for series with no hot point that early (when archived ranges exist).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from psycopg import sql

from agts.archive import ColdTier
from agts.db._database import Database
from agts.query._raw import int_array, typed_points
from agts.query._tiers import POINTS, cold_points

__all__ = ["latest_points"]

_EVER = datetime(2, 1, 1, tzinfo=UTC)  # no point agts stores is older (see agts._arrow)


def _ids(series_ids: list[int]) -> sql.Composable:
    return int_array(series_ids)


def latest_points(db: Database, cold: ColdTier | None, series: pl.DataFrame,
                  before: datetime | None) -> pl.DataFrame:
    """``timestamp, series_id, value``: the newest point of each series of ``series`` (at or
    before ``before``), ordered by series id; series without such a point have no row."""
    ids = series.get_column("series_id").to_list()
    if not ids:
        return pl.DataFrame(schema=POINTS)
    # Literals of agts' own ids and a UTC datetime, no bound parameters: ADBC then reads the
    # result as a binary COPY (see agts.query._raw).
    if before is None:
        query = sql.SQL('SELECT time AS "timestamp", series_id, value FROM agts.series_latest '
                        "WHERE series_id = ANY({}) ORDER BY series_id").format(_ids(ids))
    else:
        query = sql.SQL(
            'SELECT p.time AS "timestamp", s.id AS series_id, p.value '
            "FROM unnest({}) AS s(id) CROSS JOIN LATERAL ("
            " SELECT m.time, m.value FROM agts.metric_points AS m"
            " WHERE m.series_id = s.id AND m.time <= {} ORDER BY m.time DESC LIMIT 1) AS p "
            "ORDER BY s.id").format(_ids(ids), sql.Literal(before))
    table = db.read_arrow(query.as_string(None), action="query latest values",
                          rows_hint=len(ids))
    hot = typed_points(table)
    if before is None:
        return hot
    missing = series.filter(~pl.col("series_id").is_in(hot.get_column("series_id").implode()))
    if missing.is_empty():
        return hot
    older = cold_points(cold, missing, _EVER, before + timedelta(microseconds=1))
    if older.is_empty():
        return hot
    newest = older.sort("series_id", "timestamp").group_by("series_id", maintain_order=True).last()
    return pl.concat([hot, newest.select(hot.columns)]).sort("series_id")
