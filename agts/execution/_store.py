"""ExecutionStore: orders, their lifecycle, fills, position snapshots, risk decisions, quotes."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import polars as pl

from agts._aio import AsyncView
from agts._args import Tiers, TimeLike, check_tiers, to_utc
from agts.archive import ColdTier
from agts.db._database import Database
from agts.errors import QueryError, ValidationError
from agts.execution import _queries as q
from agts.execution import _tiers
from agts.execution._frames import to_arrow
from agts.execution._models import (
    Fill,
    Order,
    OrderFilters,
    OrderHistory,
    OrderState,
    PositionSnapshot,
    RiskDecision,
)
from agts.execution._schema import SPECS
from agts.execution._write import write

__all__ = ["EngineParts", "ExecutionStore"]

class EngineParts(Protocol):
    """What an :class:`ExecutionStore` takes from its engine (an :class:`agts.StorageEngine`)."""

    @property
    def db(self) -> Database: ...

    @property
    def cold_tier(self) -> ColdTier: ...

    @property
    def aio(self) -> AsyncView[Any]: ...


F = TypeVar("F", bound=Callable[..., Any])


def _replica_read(method: F) -> F:
    """History queries may read a replica (``database.replicas``); ``order_state`` and
    ``order_history``, asked right after a write, read the primary."""
    @functools.wraps(method)
    def read(self: ExecutionStore, *args: Any, **kwargs: Any) -> Any:
        return self._db.read(lambda: method(self, *args, **kwargs))

    return read  # type: ignore[return-value]


def _uuid_text(value: uuid.UUID | str, *, name: str) -> str:
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise ValidationError(f"{name} must be a UUID, got {value!r}", column=name) from None


class ExecutionStore:
    """Execution history in TimescaleDB, sharing the engine's connections.

    Every ``store_*`` call is one transaction through one bulk path (Arrow → ADBC COPY into a
    staging table → checks → insert). Storing the same record again is a no-op; a different payload
    under a stored key raises :class:`~agts.ConflictError`; a broken rule raises
    :class:`~agts.ConstraintError` naming the constraint, column and value. Nothing of a failing
    batch is written. Batch forms take a Polars/pandas frame, a pyarrow Table or a list of records
    and return the number of new rows.

    Parameters
    ----------
    engine
        A connected :class:`agts.StorageEngine` (migrated to version 3 or later).

    Examples
    --------
    >>> store = agts.ExecutionStore(engine)                             # doctest: +SKIP
    >>> store.store_order(agts.Order(id=uuid.uuid4(), timestamp=now, venue="binance",
    ...     market="BTC-USD", side="buy", order_type="limit", price=60_000.0, size=0.1,
    ...     status="new", client_order_id="cl-1"))
    """

    def __init__(self, engine: EngineParts) -> None:
        self.engine = engine
        self._db = engine.db
        self._cold = engine.cold_tier

    def __repr__(self) -> str:
        return f"ExecutionStore({self.engine!r})"

    @property
    def aio(self) -> AsyncView[ExecutionStore]:
        """This store for asyncio (``await store.aio.query_fills(...)``), sharing the engine's
        bound on calls in flight: see :class:`agts.AsyncView`."""
        view = self.__dict__.get("_aio_")
        if view is None:
            view = self.__dict__["_aio_"] = AsyncView(self, share=self.engine.aio)
        return view

    # -- writes ------------------------------------------------------------------------------

    def store_order(self, order: Order) -> bool:
        """Store one order and its initial status event; True if it was new."""
        return self.store_orders([order]) == 1

    def store_orders(self, orders: Any) -> int:
        """Store orders (frame, Arrow table or list of :class:`Order`); return how many were new."""
        return write(self._db, SPECS["orders"], to_arrow(orders, SPECS["orders"]))

    def store_fill(self, fill: Fill) -> bool:
        """Store one fill; its order must be stored. True if it was new."""
        return self.store_fills([fill]) == 1

    def store_fills(self, fills: Any) -> int:
        """Store fills (frame, Arrow table or list of :class:`Fill`); return how many were new."""
        return write(self._db, SPECS["fills"], to_arrow(fills, SPECS["fills"]))

    def store_position_snapshot(self, snapshot: PositionSnapshot) -> bool:
        """Store one position snapshot (key: market and timestamp); True if it was new."""
        return self.store_position_snapshots([snapshot]) == 1

    def store_position_snapshots(self, snapshots: Any) -> int:
        """Store position snapshots; return how many were new."""
        spec = SPECS["position_snapshots"]
        return write(self._db, spec, to_arrow(snapshots, spec))

    def store_risk_decision(self, decision: RiskDecision) -> bool:
        """Store one risk decision; True if it was new."""
        return self.store_risk_decisions([decision]) == 1

    def store_risk_decisions(self, decisions: Any) -> int:
        """Store risk decisions (``details`` as JSON text, a struct column or dicts)."""
        spec = SPECS["risk_decisions"]
        return write(self._db, spec, to_arrow(decisions, spec))

    def store_quotes(self, quotes: Any) -> int:
        """Store market quotes ``timestamp, venue, market, bid, ask[, mid]``; a missing mid is
        ``(bid + ask) / 2``. Key: market, venue and timestamp. Returns how many were new."""
        spec = SPECS["market_quotes"]
        return write(self._db, spec, to_arrow(quotes, spec))

    def update_order_status(
        self, order_id: uuid.UUID | str, status: str, timestamp: TimeLike, *,
        filled_size: float | None = None, reason: str | None = None,
    ) -> bool:
        """Record a status change of a stored order (a lifecycle event); True if it was new.

        Raises
        ------
        ConstraintError
            Unknown order (``order_events_order_id_fkey``), unknown status
            (``order_events_status_check``), or the order already reached a final status
            (filled, cancelled, rejected, expired) at or before ``timestamp``
            (``order_lifecycle``).
        ConflictError
            The same event (order, timestamp, status) is stored with another reason/filled size.
        """
        frame = pl.DataFrame({
            "timestamp": [to_utc(timestamp, name="timestamp")],
            "order_id": [_uuid_text(order_id, name="order_id")],
            "status": [status], "filled_size": [filled_size], "reason": [reason],
        }, schema_overrides={"filled_size": pl.Float64, "reason": pl.String})
        return self.store_order_events(frame) == 1

    def store_order_events(self, events: Any) -> int:
        """Store lifecycle events ``timestamp, order_id, status[, filled_size, reason]``."""
        spec = SPECS["order_events"]
        return write(self._db, spec, to_arrow(events, spec))

    # -- queries -----------------------------------------------------------------------------

    @_replica_read
    def query_orders(self, start: TimeLike, end: TimeLike,
                     filters: OrderFilters | None = None, *, tiers: Tiers = "hot") -> pl.DataFrame:
        """Orders placed in ``[start, end)``, with their current state, oldest first.

        Returns
        -------
        pl.DataFrame
            ``id, timestamp, venue, market, side, order_type, price, size, status,
            client_order_id, status_time, filled_size, avg_fill_price, fill_count``; ``status``
            is the current status (latest event).

        ``tiers`` (every ``query_*`` takes it): ``"hot"`` (default) reads TimescaleDB,
        ``"cold"`` the rows archived and dropped from it, ``"all"`` both, every row once, with
        the same columns, dtypes, filters and order. An order's state counts its events and
        fills in both tiers.
        """
        check_tiers(tiers)
        if filters is not None and not isinstance(filters, OrderFilters):
            raise ValidationError(
                f"filters must be an agts.OrderFilters, got {type(filters).__name__} {filters!r}")
        f = filters or OrderFilters()
        if tiers != "hot":
            return _tiers.query_orders(self, start, end, f, tiers=tiers)
        select = q.window(q.Select(q.ORDER_COLUMNS, "agts.order_state"), start, end)
        for column in ("venue", "market", "side", "status", "client_order_id", "order_type"):
            select.any_of(column, getattr(f, column))
        return q.fetch(self._db, select, order_by="timestamp, id", action="query orders")

    @_replica_read
    def query_fills(self, start: TimeLike, end: TimeLike, *,
                    market: str | list[str] | None = None, venue: str | list[str] | None = None,
                    order_id: uuid.UUID | str | None = None,
                    tiers: Tiers = "hot") -> pl.DataFrame:
        """Fills in ``[start, end)``, oldest first (the columns of :class:`Fill`)."""
        check_tiers(tiers)
        select = q.window(q.Select(q.FILL_COLUMNS, "agts.fills"), start, end)
        select.any_of("market", market).any_of("venue", venue)
        oid = None if order_id is None else _uuid_text(order_id, name="order_id")
        if oid is not None:
            select.add("order_id = {}::uuid", oid)
        if tiers != "hot":
            return _tiers.query_table(
                self, "fills", select, start=start, end=end, tiers=tiers, action="query fills",
                filters={"market": market, "venue": venue, "order_id": oid},
                order_by=("timestamp", "id"))
        return q.fetch(self._db, select, order_by="timestamp, id", action="query fills")

    @_replica_read
    def query_positions(self, market: str, start: TimeLike, end: TimeLike, *,
                        tiers: Tiers = "hot") -> pl.DataFrame:
        """Position snapshots of ``market`` in ``[start, end)``, oldest first."""
        check_tiers(tiers)
        select = q.window(q.Select(q.POSITION_COLUMNS, "agts.position_snapshots"), start, end)
        select.any_of("market", market)
        if tiers != "hot":
            return _tiers.query_table(
                self, "position_snapshots", select, start=start, end=end, tiers=tiers,
                filters={"market": market}, order_by=("timestamp",), action="query positions")
        return q.fetch(self._db, select, order_by="timestamp", action="query positions")

    @_replica_read
    def query_risk_decisions(self, start: TimeLike, end: TimeLike, *,
                             policy: str | list[str] | None = None,
                             decision: str | list[str] | None = None,
                             market: str | list[str] | None = None,
                             tiers: Tiers = "hot") -> pl.DataFrame:
        """Risk decisions in ``[start, end)``, oldest first; ``details`` is JSON text."""
        check_tiers(tiers)
        select = q.window(q.Select(q.RISK_COLUMNS, "agts.risk_decisions"), start, end)
        select.any_of("policy", policy).any_of("decision", decision).any_of("market", market)
        if tiers != "hot":
            return _tiers.query_table(
                self, "risk_decisions", select, start=start, end=end, tiers=tiers,
                filters={"policy": policy, "decision": decision, "market": market},
                order_by=("timestamp", "id"), action="query risk decisions")
        return q.fetch(self._db, select, order_by="timestamp, id",
                       action="query risk decisions")

    @_replica_read
    def query_quotes(self, market: str | list[str], start: TimeLike, end: TimeLike, *,
                     venue: str | list[str] | None = None,
                     tiers: Tiers = "hot") -> pl.DataFrame:
        """Quotes of ``market`` in ``[start, end)``: ``timestamp, venue, market, bid, ask, mid``.

        Use it as the ``marks`` of :func:`agts.positions.from_fills` (``mark_column="mid"``).
        """
        check_tiers(tiers)
        select = q.window(q.Select(q.QUOTE_COLUMNS, "agts.market_quotes"), start, end)
        select.any_of("market", market).any_of("venue", venue)
        if tiers != "hot":
            return _tiers.query_table(
                self, "market_quotes", select, start=start, end=end, tiers=tiers,
                filters={"market": market, "venue": venue},
                order_by=("timestamp", "market", "venue"), action="query quotes")
        return q.fetch(self._db, select, order_by="timestamp, market, venue",
                       action="query quotes")

    def order_state(self, order_id: uuid.UUID | str) -> OrderState:
        """The current state of one order: latest status, filled size, average fill price.

        Raises
        ------
        QueryError
            No order has this id.
        """
        select = q.Select(q.ORDER_COLUMNS, "agts.order_state").add(
            "id = {}::uuid", _uuid_text(order_id, name="order_id"))
        frame = q.fetch(self._db, select, order_by="id", action="read order state")
        if frame.height == 0:
            raise QueryError(f"no order with id {str(order_id)!r}")
        row = frame.row(0, named=True)
        return OrderState(
            id=row["id"], client_order_id=row["client_order_id"], status=row["status"],
            status_time=row["status_time"], size=row["size"], filled_size=row["filled_size"],
            avg_fill_price=row["avg_fill_price"], fill_count=int(row["fill_count"]),
        )

    def order_history(self, order_id: uuid.UUID | str) -> OrderHistory:
        """The audit trail of one order: as placed, current state, status events and fills."""
        oid = _uuid_text(order_id, name="order_id")
        state = self.order_state(oid)
        placed = q.fetch(self._db, q.placed_orders([oid]), order_by="timestamp",
                         action="read order").row(0, named=True)
        events = q.fetch(self._db, q.Select(q.EVENT_COLUMNS, "agts.order_events").add(
            "order_id = {}::uuid", oid), order_by="timestamp, status", action="read order events")
        fills = q.fetch(self._db, q.Select(q.FILL_COLUMNS, "agts.fills").add(
            "order_id = {}::uuid", oid), order_by="timestamp, id", action="read order fills")
        return OrderHistory(order=Order(**placed), state=state, events=events, fills=fills)
