"""Hot ∪ cold for execution queries (``ExecutionStore.query_* (..., tiers=...)``).

The hot part is the store's own statement; the cold part is :meth:`agts.archive.ColdTier.query`
(dropped units only) with the same filters applied in Polars, cast to the hot frame's dtypes. Rows
of one timestamp always lie in one tier (chunks split by time), so the union is ordered by merging
on ``timestamp``: hot rows keep the server's order, cold rows are sorted by the same keys (the
database collation is ``C``: byte order, as Polars sorts).

Orders are a view (``agts.order_state``): the order as placed plus its latest status event and its
fills, which may live in either tier. An order read from the cold tier, or a hot order whose events
or fills were archived, gets its state computed in Polars from the events and fills of both tiers
with the view's definitions; the status filter applies to that state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from agts._args import check_range
from agts.execution import _queries as q

if TYPE_CHECKING:
    from agts.execution._store import ExecutionStore

__all__ = ["query_orders", "query_table"]

_EVER = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def _values(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _filtered(frame: pl.DataFrame, filters: Mapping[str, Any]) -> pl.DataFrame:
    for column, value in filters.items():
        values = _values(value)
        if values is not None:
            frame = frame.filter(pl.col(column).is_in(values))
    return frame


def _like(frame: pl.DataFrame, hot: pl.DataFrame) -> pl.DataFrame:
    return frame.select([pl.col(c).cast(t) for c, t in hot.schema.items()])


def _hot(store: ExecutionStore, select: q.Select, tiers: str, order_by: str,
         action: str) -> pl.DataFrame:
    if tiers == "cold":
        select.where.append("false")  # no rows, but the hot tier's columns and dtypes
    return q.fetch(store._db, select, order_by=order_by, action=action)


def _merge(hot: pl.DataFrame, cold: pl.DataFrame, order_by: Sequence[str]) -> pl.DataFrame:
    cold = _like(cold, hot).sort(list(order_by))
    return pl.concat([hot, cold]).sort("timestamp", maintain_order=True)


def query_table(
    store: ExecutionStore, table: str, select: q.Select, *, start: Any, end: Any,
    filters: Mapping[str, Any], order_by: Sequence[str], tiers: str, action: str,
) -> pl.DataFrame:
    """``select`` (the hot statement, window and filters applied) on the tiers asked for, with the
    same window and ``filters`` (column → value or values) applied to the cold rows."""
    hot = _hot(store, select, tiers, ", ".join(order_by), action)
    cold = _filtered(store._cold.query(table, *check_range(start, end)), filters)
    return _merge(hot, cold, order_by)


def _by_ids(store: ExecutionStore, table: str, columns: str, ids: list[str]) -> pl.DataFrame:
    """Rows of ``table`` whose ``order_id`` is in ``ids``, from both tiers (columns as hot)."""
    select = q.Select(columns, f"agts.{table}").add("order_id = ANY({}::uuid[])", ids)
    hot = q.fetch(store._db, select, order_by="timestamp", action=f"read {table} of orders")
    cold = store._cold.query(table, *_EVER).filter(pl.col("order_id").is_in(ids))
    return pl.concat([hot, _like(cold, hot)])


def _state(store: ExecutionStore, placed: pl.DataFrame, columns: list[str],
           schema: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """``agts.order_state`` for the orders ``placed`` (rows of ``agts.orders``), from the events
    and fills of both tiers."""
    ids = placed.get_column("id").to_list()
    events = _by_ids(store, "order_events", q.EVENT_COLUMNS, ids)
    fills = _by_ids(store, "fills", q.FILL_COLUMNS, ids)
    latest = events.sort("timestamp", "status", descending=True).group_by(
        "order_id", maintain_order=True).first().select(
        pl.col("order_id").alias("id"), pl.col("status").alias("_status"),
        pl.col("timestamp").alias("_status_time"))
    sums = fills.group_by("order_id").agg(
        pl.col("size").sum().alias("_filled"),
        ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("avg_fill_price"),
        pl.len().alias("_count")).rename({"order_id": "id"})
    state = placed.join(latest, on="id", how="left").join(sums, on="id", how="left").with_columns(
        pl.coalesce("_status", "status").alias("status"),
        pl.coalesce("_status_time", "timestamp").alias("status_time"),
        pl.col("_filled").fill_null(0.0).alias("filled_size"),
        pl.col("_count").fill_null(0).alias("fill_count"))
    return state.select([pl.col(c).cast(schema[c]) for c in columns])


def query_orders(store: ExecutionStore, start: Any, end: Any, filters: Any, *,
                 tiers: str) -> pl.DataFrame:
    """:meth:`ExecutionStore.query_orders` on ``tiers`` ``"cold"`` or ``"all"``."""
    names = ("venue", "market", "side", "client_order_id", "order_type")
    wanted = {n: getattr(filters, n) for n in names}
    select = q.window(q.Select(q.ORDER_COLUMNS, "agts.order_state"), start, end)
    for column, value in wanted.items():
        select.any_of(column, value)
    hot = _hot(store, select, tiers, "timestamp, id", "query orders")
    columns, schema = hot.columns, hot.schema
    cold = _filtered(store._cold.query("orders", *check_range(start, end)), wanted)
    # Hot orders whose events or fills were archived: their view state misses those rows.
    stale: set[str] = set()
    if not hot.is_empty():
        hot_ids = hot.get_column("id").to_list()
        for table in ("order_events", "fills"):
            archived = store._cold.query(table, *_EVER).select("order_id")
            stale.update(archived.filter(pl.col("order_id").is_in(hot_ids)).get_column(
                "order_id").to_list())
    if stale:
        placed = q.fetch(store._db, q.placed_orders(sorted(stale)), order_by="timestamp, id",
                         action="read orders")
        hot = pl.concat([hot.filter(~pl.col("id").is_in(sorted(stale))),
                         _state(store, placed, columns, schema)]).sort(
            "timestamp", "id", maintain_order=True)
    if not cold.is_empty():
        cold = _state(store, cold, columns, schema)
    both = _merge(hot, cold.select(columns) if not cold.is_empty() else hot.clear(),
                  ("timestamp", "id"))
    status = _values(filters.status)
    return both if status is None else both.filter(pl.col("status").is_in(status))
