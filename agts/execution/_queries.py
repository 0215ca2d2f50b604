"""Read execution history into Polars frames (ADBC fetch: Arrow in one piece, no row loop).

ADBC returns uuid as binary and jsonb as text, so ids are selected as ``::text``. Time windows
are half-open, ``start <= timestamp < end``, in UTC; rows come back oldest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from agts._args import check_range
from agts.db._database import Database
from agts.errors import QueryError, ValidationError

__all__ = ["Select", "fetch", "placed_orders", "window"]

ORDER_COLUMNS = ("id::text AS id, timestamp, venue, market, side, order_type, price, size, status, "
                 "client_order_id, status_time, filled_size, avg_fill_price, fill_count")
FILL_COLUMNS = ("id::text AS id, timestamp, order_id::text AS order_id, venue, market, side, "
                "price, size, fee, fee_currency")
EVENT_COLUMNS = "timestamp, order_id::text AS order_id, status, filled_size, reason"
POSITION_COLUMNS = "timestamp, market, size, avg_entry_price, unrealized_pnl, realized_pnl"
RISK_COLUMNS = ("id::text AS id, timestamp, policy, decision, reason, details::text AS details, "
                "market, order_id::text AS order_id")
PLACED_COLUMNS = ("id::text AS id, timestamp, venue, market, side, order_type, price, size, "
                  "status, client_order_id")
QUOTE_COLUMNS = "timestamp, venue, market, bid, ask, mid"


def placed_orders(ids: list[str]) -> Select:
    """``agts.orders`` rows (the orders as placed, the columns of :class:`agts.Order`) of ``ids``."""
    return Select(PLACED_COLUMNS, "agts.orders").add("id = ANY({}::uuid[])", ids)


class Select:
    """A SELECT over one relation with bound ``$n`` parameters: the column list and relation are
    constants of this module; every value is a bound parameter."""

    def __init__(self, columns: str, relation: str) -> None:
        self.columns = columns
        self.relation = relation
        self.where: list[str] = []
        self.params: list[Any] = []

    def add(self, condition: str, value: Any) -> Select:
        """Add ``condition`` with ``{}`` standing for the next parameter."""
        self.params.append(value)
        self.where.append(condition.format(f"${len(self.params)}"))
        return self

    def any_of(self, column: str, value: str | Sequence[str] | None, *,
               cast: str = "text") -> Select:
        """``column = ANY(values)`` when ``value`` is given (one value or several)."""
        if value is None:
            return self
        values = [value] if isinstance(value, str) else list(value) if isinstance(
            value, list | tuple | set | frozenset) else []
        if not values or not all(isinstance(v, str) for v in values):
            raise ValidationError(
                f"filter {column} must be a string or a non-empty list of strings, got {value!r}",
                column=column)
        return self.add(f"{column} = ANY({{}}::{cast}[])", values)

    def sql(self, order_by: str) -> str:
        where = " AND ".join(self.where) if self.where else "true"
        return f"SELECT {self.columns} FROM {self.relation} WHERE {where} ORDER BY {order_by}"


def window(select: Select, start: Any, end: Any) -> Select:
    """Restrict to ``start <= timestamp < end`` (times by the rules of :mod:`agts._args`)."""
    start_utc, end_utc = check_range(start, end)
    return select.add("timestamp >= {}", start_utc).add("timestamp < {}", end_utc)


def fetch(db: Database, select: Select, *, order_by: str, action: str) -> pl.DataFrame:
    """Run ``select`` through a pooled ADBC connection and return a frame."""
    frame = pl.from_arrow(db.read_arrow(select.sql(order_by), select.params, action=action))
    if not isinstance(frame, pl.DataFrame):  # pragma: no cover - a table always gives a frame
        raise QueryError(f"{action} returned no table")
    return frame
