"""Execution history: orders and their lifecycle, fills, position snapshots, risk decisions and
market quotes. The public names are re-exported from :mod:`agts`."""

from agts.execution._models import (
    Fill,
    Order,
    OrderFilters,
    OrderHistory,
    OrderState,
    PositionSnapshot,
    RiskDecision,
)
from agts.execution._store import ExecutionStore

__all__ = [
    "ExecutionStore",
    "Fill",
    "Order",
    "OrderFilters",
    "OrderHistory",
    "OrderState",
    "PositionSnapshot",
    "RiskDecision",
]
