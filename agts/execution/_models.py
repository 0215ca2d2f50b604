"""The records of execution history, with the seed's field names."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from agts._args import TimeLike

__all__ = [
    "Fill", "Order", "OrderFilters", "OrderHistory", "OrderState", "PositionSnapshot",
    "RiskDecision",
]


@dataclass(frozen=True)
class Order:
    """An order as placed.

    ``status`` is the status it was stored with (usually ``"new"``); later changes are lifecycle
    events (:meth:`ExecutionStore.update_order_status`). ``side`` is ``"buy"`` or ``"sell"``;
    ``order_type`` one of ``market, limit, stop, stop_limit, take_profit, take_profit_limit``;
    ``price`` is required for the limit types. ``timestamp`` follows the rules of every time
    argument: a datetime (naive = UTC), a date, an ISO 8601 string or a numpy.datetime64.
    """

    id: uuid.UUID | str
    timestamp: TimeLike
    venue: str
    market: str
    side: str
    order_type: str
    price: float | None
    size: float
    status: str
    client_order_id: str


@dataclass(frozen=True)
class Fill:
    """An execution of (part of) an order. ``fee`` is non-negative, in ``fee_currency``."""

    id: uuid.UUID | str
    timestamp: TimeLike
    order_id: uuid.UUID | str
    venue: str
    market: str
    side: str
    price: float
    size: float
    fee: float
    fee_currency: str


@dataclass(frozen=True)
class PositionSnapshot:
    """A position as the bot saw it: signed ``size`` (negative = short), in base units."""

    timestamp: TimeLike
    market: str
    size: float
    avg_entry_price: float
    unrealized_pnl: float | None = None
    realized_pnl: float | None = None


@dataclass(frozen=True)
class RiskDecision:
    """A decision of the risk module: ``decision`` is ``allow``, ``deny``, ``reduce`` or ``halt``.

    ``details`` is any JSON-serializable dict (stored as jsonb); ``market`` and ``order_id`` say
    what it was about, when it was about one (no foreign key: a denied order is never stored).
    """

    id: uuid.UUID | str
    timestamp: TimeLike
    policy: str
    decision: str
    reason: str | None = None
    details: dict[str, Any] | None = None
    market: str | None = None
    order_id: uuid.UUID | str | None = None


@dataclass(frozen=True)
class OrderFilters:
    """Filters of :meth:`ExecutionStore.query_orders`; each is a value or a list of values.

    ``status`` filters on the *current* status (the latest lifecycle event).
    """

    venue: str | Sequence[str] | None = None
    market: str | Sequence[str] | None = None
    side: str | Sequence[str] | None = None
    status: str | Sequence[str] | None = None
    client_order_id: str | Sequence[str] | None = None
    order_type: str | Sequence[str] | None = None


@dataclass(frozen=True)
class OrderState:
    """The current state of one order (a row of the ``agts.order_state`` view)."""

    id: str
    client_order_id: str
    status: str
    status_time: datetime
    size: float
    filled_size: float
    avg_fill_price: float | None
    fill_count: int

    @property
    def remaining_size(self) -> float:
        """``size - filled_size``, never below zero."""
        return max(self.size - self.filled_size, 0.0)


@dataclass(frozen=True)
class OrderHistory:
    """The full life of one order: as placed, its status events and its fills, oldest first."""

    order: Order
    state: OrderState
    events: pl.DataFrame = field(repr=False)
    fills: pl.DataFrame = field(repr=False)

    def timeline(self) -> pl.DataFrame:
        """Events and fills in one frame ordered by time: ``timestamp, kind, status, price,
        size, fee, fill_id``."""
        events = self.events.select(
            "timestamp", pl.lit("status").alias("kind"), "status",
            pl.lit(None, pl.Float64).alias("price"), pl.col("filled_size").alias("size"),
            pl.lit(None, pl.Float64).alias("fee"), pl.lit(None, pl.String).alias("fill_id"))
        fills = self.fills.select(
            "timestamp", pl.lit("fill").alias("kind"), pl.lit(None, pl.String).alias("status"),
            "price", "size", "fee", pl.col("id").alias("fill_id"))
        return pl.concat([events, fills]).sort("timestamp", "kind", maintain_order=True)
