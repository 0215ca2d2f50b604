"""Raw points: one page, keyset pages, bounded batches.

Rows are ordered by ``(timestamp, series_id)``, a total order (one value per series and
microsecond), so a page ends at a row and the next page starts strictly after it: keyset
pagination, no OFFSET, no row seen twice or skipped while data is appended.

The points statement is composed with ``psycopg.sql.Literal`` rather than sent with bound
parameters. Only values agts itself produced go in that way — integer series ids, UTC datetimes,
integer limits — never a metric name or label (those were bound parameters of the series lookup
that produced the ids). The reason is measured: ADBC runs an unparameterized SELECT as a binary
``COPY ... TO STDOUT`` that it reads as Arrow batch by batch, while a statement with bound
parameters goes through a prepared statement, is not streamed, and took 1.6x as long for 1.44M
rows (1,300 ms vs 800 ms). The same COPY path gives ``iter_batches=True`` a real stream: one
statement, read batch by batch and re-cut into frames of ``batch_size`` rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa
from psycopg import sql

from agts.db._database import Database
from agts.query._series import label_struct

__all__ = ["RAW_SCHEMA", "empty_raw", "fetch_page", "int_array", "iter_pages", "typed_points",
           "with_series"]

RAW_SCHEMA = {"timestamp": pl.Datetime("us", "UTC"), "metric_name": pl.String,
              "value": pl.Float64, "series_id": pl.Int32}


def int_array(ids: list[int]) -> sql.Composable:
    """``'{1,2,3}'::int[]``: agts' own series ids as an array literal, written directly (psycopg's
    general array quoting costs ~1 ms per 1,000 ids)."""
    return sql.SQL("'{" + ",".join(str(int(i)) for i in ids) + "}'::int[]")


def points_sql(
    series_ids: list[int], start: datetime, end: datetime, *,
    after: tuple[datetime, int] | None = None, order: bool = True, limit: int | None = None,
) -> str:
    """The points statement with agts-produced literals (see the module docstring).

    With one series the ``series_id`` column is left out of the result (the caller knows it):
    every column costs the server a send function per row, and for one series it is a constant.
    """
    if len(series_ids) == 1:
        # "= id", not "= ANY('{id}')": only then does the planner know the (series_id, time)
        # index yields time order, and the ORDER BY costs no sort (5.9 vs 11.2 ms for 21,600 rows)
        select = sql.SQL('SELECT time AS "timestamp", value FROM agts.metric_points '
                         "WHERE series_id = {}").format(sql.Literal(int(series_ids[0])))
    else:
        select = sql.SQL('SELECT time AS "timestamp", series_id, value FROM agts.metric_points '
                         "WHERE series_id = ANY({})").format(int_array(series_ids))
    parts: list[sql.Composable] = [select, sql.SQL(" AND time >= {} AND time < {}").format(
        sql.Literal(start), sql.Literal(end))]
    if after is not None:
        parts.append(sql.SQL(" AND (time, series_id) > ({}::timestamptz, {}::int)").format(
            sql.Literal(after[0]), sql.Literal(int(after[1]))))
    if order:
        parts.append(sql.SQL(' ORDER BY "timestamp", series_id'))
    if limit is not None:
        parts.append(sql.SQL(" LIMIT {}").format(sql.Literal(int(limit))))
    return sql.Composed(parts).as_string(None)


_POINTS: dict[str, pl.DataType] = {
    "timestamp": pl.Datetime("us", "UTC"), "series_id": pl.Int32(), "value": pl.Float64()}


def _typed(frame: pl.DataFrame, series_ids: list[int]) -> pl.DataFrame:
    """Points with the exact dtypes, in the column order ``timestamp, series_id, value``."""
    if "series_id" not in frame.columns:  # one series: its id, repeated (no expression engine)
        ids = pl.Series("series_id", [series_ids[0]], pl.Int32).new_from_index(0, frame.height)
        frame = pl.DataFrame([frame.get_column("timestamp"), ids, frame.get_column("value")])
    if frame.schema == _POINTS:  # what ADBC returns: nothing to cast
        return frame
    return frame.select(pl.col(name).cast(dtype) for name, dtype in _POINTS.items())


def typed_points(table: pa.Table) -> pl.DataFrame:
    """A result with ``timestamp, series_id, value`` as points with the exact dtypes."""
    return _typed(_frame(table), [])


def fetch_page(
    db: Database, series_ids: list[int], start: datetime, end: datetime, *,
    limit: int | None, after: tuple[datetime, int] | None, server_order: bool = True,
    rows_hint: int | None = None,
) -> pl.DataFrame:
    """Points ``(timestamp, series_id, value)`` of ``series_ids`` in ``[start, end)``, after the
    cursor, ordered by (timestamp, series_id), at most ``limit`` rows (``rows_hint``: about how
    many, see :meth:`agts.db.Database.fetch_arrow`).

    ``server_order=False`` is for a fetch that takes every row (``limit`` only guards the size):
    the server returns rows in index order and Polars sorts them, which spares the server a sort
    of the whole result (it spills to disk past ``work_mem``; 3-4x the scan time for 1.4M rows).
    """
    # One series: the (series_id, time) index already returns its points in time order, so the
    # server's ORDER BY costs nothing and the client need not sort.
    server_order = server_order or len(series_ids) == 1
    query = points_sql(series_ids, start, end, after=after, order=server_order, limit=limit)
    frame = _typed(_frame(db.read_arrow(query, action="query metrics", rows_hint=rows_hint)),
                   series_ids)
    if server_order:
        return frame
    # Two single-key sorts, the second stable, give the order of one (timestamp, series_id)
    # sort at a quarter of its cost (1.44M rows: 39 ms vs 146 ms).
    if len(series_ids) > 1:
        frame = frame.sort("series_id")
    return frame.sort("timestamp", maintain_order=True)


def iter_pages(
    db: Database, series_ids: list[int], start: datetime, end: datetime, *, batch_size: int,
    after: tuple[datetime, int] | None = None,
) -> Iterator[pl.DataFrame]:
    """Frames of exactly ``batch_size`` rows (the last may be shorter) from one streamed,
    ordered statement; at most one ADBC batch plus one frame is held at a time."""
    query = points_sql(series_ids, start, end, after=after)
    pending: list[pa.RecordBatch] = []
    held = 0
    with db.adbc("stream metrics") as conn, conn.cursor() as cur:
        cur.execute(query)
        reader = cur.fetch_record_batch()
        for batch in reader:
            pending.append(batch)
            held += batch.num_rows
            while held >= batch_size:
                table = pa.Table.from_batches(pending)
                yield _typed(_frame(table.slice(0, batch_size)), series_ids)
                rest = table.slice(batch_size)
                pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield _typed(_frame(pa.Table.from_batches(pending)), series_ids)


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def with_series(points: pl.DataFrame, series: pl.DataFrame) -> pl.DataFrame:
    """Join metric names and label structs (built once per series) onto points.

    Columns: ``timestamp`` (UTC), ``metric_name``, ``value``, ``labels`` (struct), ``series_id``.
    """
    labels = label_struct(series.get_column("labels_json"))
    if series.height == 1:  # every point has the one series' name and labels
        n = points.height
        return pl.DataFrame([
            points.get_column("timestamp"),
            series.get_column("metric_name").new_from_index(0, n) if n else
            series.get_column("metric_name").clear(), points.get_column("value"),
            labels.new_from_index(0, n) if n else labels.clear(), points.get_column("series_id")])
    lookup = series.select("metric_name", labels)
    ids = series.get_column("series_id").to_numpy()
    # Row of each point's series in ``lookup``: a dense position table indexed by series id
    # (ids are small positive integers), then one gather - half the cost of a join that keeps
    # the points' order.
    position = np.full(int(ids.max()) + 1 if len(ids) else 1, -1, dtype=np.int64)
    position[ids] = np.arange(len(ids))
    rows = position[points.get_column("series_id").to_numpy()]
    if (rows < 0).any():
        raise AssertionError("a point of a series that was not resolved")  # a bug, not input
    attached = lookup[rows]
    return pl.DataFrame([points.get_column("timestamp"), attached.get_column("metric_name"),
                         points.get_column("value"), attached.get_column("labels"),
                         points.get_column("series_id")])


def empty_raw(series: pl.DataFrame) -> pl.DataFrame:
    """The empty result with the right dtypes (labels struct from the matching series)."""
    points = pl.DataFrame(schema={"timestamp": pl.Datetime("us", "UTC"), "series_id": pl.Int32,
                                  "value": pl.Float64})
    return with_series(points, series)
