"""What the execution tables hold: vocabularies, columns and the rules every row must satisfy.

The rules mirror the CHECK constraints of ``sql/migrations/0003_execution.up.sql`` (same names), so
agts can refuse a bad row before it reaches the database with a message that names the
constraint, the column, the offending value and its row; the database still enforces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import polars as pl

__all__ = [
    "DECISIONS",
    "FILL_TOLERANCE",
    "ORDER_TYPES",
    "SIDES",
    "SPECS",
    "STATUSES",
    "TERMINAL_STATUSES",
    "Column",
    "Kind",
    "Rule",
    "TableSpec",
]

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit", "stop", "stop_limit", "take_profit", "take_profit_limit"]
OrderStatus = Literal[
    "pending_new", "new", "partially_filled", "filled", "pending_cancel", "cancelled", "rejected",
    "expired",
]
Decision = Literal["allow", "deny", "reduce", "halt"]
Kind = Literal["orders", "order_events", "fills", "position_snapshots", "risk_decisions",
               "market_quotes"]

SIDES: tuple[str, ...] = get_args(Side)
ORDER_TYPES: tuple[str, ...] = get_args(OrderType)
STATUSES: tuple[str, ...] = get_args(OrderStatus)
TERMINAL_STATUSES: tuple[str, ...] = ("filled", "cancelled", "rejected", "expired")
DECISIONS: tuple[str, ...] = get_args(Decision)
LIMIT_TYPES: tuple[str, ...] = ("limit", "stop_limit", "take_profit_limit")
#: How far the fills of an order may add up above its size, relative to the size: room for float
#: rounding of a sum of fills (0.1 + 0.2 on an order of 0.3), not for a real overfill. The same
#: bound applies to a reported ``filled_size``.
FILL_TOLERANCE = 1e-9

ColumnType = Literal["uuid", "timestamptz", "text", "float8", "jsonb"]


@dataclass(frozen=True)
class Column:
    """One column: its name, SQL type and whether it may be null."""

    name: str
    type: ColumnType
    nullable: bool = False


@dataclass(frozen=True)
class Rule:
    """A row rule: ``violated(frame)`` is an expression true on offending rows."""

    constraint: str
    column: str
    requirement: str
    violated: Callable[[], pl.Expr]


@dataclass(frozen=True)
class TableSpec:
    """How one kind of record is stored."""

    kind: Kind
    noun: str  # "order", "fill", ... for messages
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # what identifies a record: same key + same payload = the same record
    key_constraint: str
    conflict_target: tuple[str, ...]  # the unique index ON CONFLICT uses
    rules: tuple[Rule, ...]

    @property
    def lock(self) -> str:
        """The row of ``agts.locks`` a write of this kind holds (migration 0008)."""
        return f"execution:{self.kind}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _not_in(column: str, allowed: tuple[str, ...]) -> Callable[[], pl.Expr]:
    return lambda: ~pl.col(column).is_in(list(allowed))


def _not_positive(column: str) -> Callable[[], pl.Expr]:
    return lambda: ~((pl.col(column) > 0) & pl.col(column).is_finite())


def _negative(column: str) -> Callable[[], pl.Expr]:
    return lambda: ~((pl.col(column) >= 0) & pl.col(column).is_finite())


def _one_of(allowed: tuple[str, ...]) -> str:
    return "must be one of " + ", ".join(repr(v) for v in allowed)


_POSITIVE = "must be a positive finite number"
_NON_NEGATIVE = "must be a non-negative finite number"

_ORDERS = TableSpec(
    kind="orders", noun="order",
    columns=(
        Column("id", "uuid"), Column("timestamp", "timestamptz"), Column("venue", "text"),
        Column("market", "text"), Column("side", "text"), Column("order_type", "text"),
        Column("price", "float8", nullable=True), Column("size", "float8"),
        Column("status", "text"), Column("client_order_id", "text"),
    ),
    key=("id",), key_constraint="order_ids_pkey", conflict_target=("id", "timestamp"),
    rules=(
        Rule("orders_side_check", "side", _one_of(SIDES), _not_in("side", SIDES)),
        Rule("orders_order_type_check", "order_type", _one_of(ORDER_TYPES),
             _not_in("order_type", ORDER_TYPES)),
        Rule("orders_status_check", "status", _one_of(STATUSES), _not_in("status", STATUSES)),
        Rule("orders_price_check", "price", _POSITIVE, _not_positive("price")),
        Rule("orders_limit_price_check", "price",
             "must be set for order types " + ", ".join(repr(t) for t in LIMIT_TYPES),
             lambda: pl.col("price").is_null() & pl.col("order_type").is_in(list(LIMIT_TYPES))),
        Rule("orders_size_check", "size", _POSITIVE, _not_positive("size")),
    ),
)

_ORDER_EVENTS = TableSpec(
    kind="order_events", noun="order event",
    columns=(
        Column("timestamp", "timestamptz"), Column("order_id", "uuid"), Column("status", "text"),
        Column("filled_size", "float8", nullable=True), Column("reason", "text", nullable=True),
    ),
    key=("order_id", "timestamp", "status"), key_constraint="order_events_key",
    conflict_target=("order_id", "timestamp", "status"),
    rules=(
        Rule("order_events_status_check", "status", _one_of(STATUSES),
             _not_in("status", STATUSES)),
        Rule("order_events_filled_size_check", "filled_size", _NON_NEGATIVE,
             _negative("filled_size")),
    ),
)

_FILLS = TableSpec(
    kind="fills", noun="fill",
    columns=(
        Column("id", "uuid"), Column("timestamp", "timestamptz"), Column("order_id", "uuid"),
        Column("venue", "text"), Column("market", "text"), Column("side", "text"),
        Column("price", "float8"), Column("size", "float8"), Column("fee", "float8"),
        Column("fee_currency", "text"),
    ),
    key=("id",), key_constraint="fills_id_key", conflict_target=("id", "timestamp"),
    rules=(
        Rule("fills_side_check", "side", _one_of(SIDES), _not_in("side", SIDES)),
        Rule("fills_price_check", "price", _POSITIVE, _not_positive("price")),
        Rule("fills_size_check", "size", _POSITIVE, _not_positive("size")),
        Rule("fills_fee_check", "fee", _NON_NEGATIVE, _negative("fee")),
    ),
)

_POSITIONS = TableSpec(
    kind="position_snapshots", noun="position snapshot",
    columns=(
        Column("timestamp", "timestamptz"), Column("market", "text"), Column("size", "float8"),
        Column("avg_entry_price", "float8"), Column("unrealized_pnl", "float8", nullable=True),
        Column("realized_pnl", "float8", nullable=True),
    ),
    key=("market", "timestamp"), key_constraint="position_snapshots_key",
    conflict_target=("market", "timestamp"),
    rules=(
        Rule("position_snapshots_size_check", "size", "must be a finite number",
             lambda: ~pl.col("size").is_finite()),
        Rule("position_snapshots_avg_entry_price_check", "avg_entry_price", _NON_NEGATIVE,
             _negative("avg_entry_price")),
    ),
)

_RISK = TableSpec(
    kind="risk_decisions", noun="risk decision",
    columns=(
        Column("id", "uuid"), Column("timestamp", "timestamptz"), Column("policy", "text"),
        Column("decision", "text"), Column("reason", "text", nullable=True),
        Column("details", "jsonb", nullable=True), Column("market", "text", nullable=True),
        Column("order_id", "uuid", nullable=True),
    ),
    key=("id",), key_constraint="risk_decisions_id_key", conflict_target=("id", "timestamp"),
    rules=(
        Rule("risk_decisions_decision_check", "decision", _one_of(DECISIONS),
             _not_in("decision", DECISIONS)),
    ),
)

_QUOTES = TableSpec(
    kind="market_quotes", noun="quote",
    columns=(
        Column("timestamp", "timestamptz"), Column("venue", "text"), Column("market", "text"),
        Column("bid", "float8", nullable=True), Column("ask", "float8", nullable=True),
        Column("mid", "float8"),
    ),
    key=("market", "venue", "timestamp"), key_constraint="market_quotes_key",
    conflict_target=("market", "venue", "timestamp"),
    rules=(
        Rule("market_quotes_bid_check", "bid", _POSITIVE, _not_positive("bid")),
        Rule("market_quotes_ask_check", "ask", _POSITIVE, _not_positive("ask")),
        Rule("market_quotes_mid_check", "mid", _POSITIVE, _not_positive("mid")),
        Rule("market_quotes_crossed_check", "bid", "must not exceed ask",
             lambda: pl.col("bid") > pl.col("ask")),
    ),
)

SPECS: dict[str, TableSpec] = {
    s.kind: s for s in (_ORDERS, _ORDER_EVENTS, _FILLS, _POSITIONS, _RISK, _QUOTES)
}
