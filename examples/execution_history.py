"""Execution history: orders and their lifecycle, fills, risk decisions, positions and PnL.

Runs in a temporary database of its own on the configured server (``$AGTS_DSN``, a config
file, or the local default of ``agts local start``), created here and dropped at the end:
nothing in your databases is read or changed.

Run: ``python examples/execution_history.py``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import polars as pl

import agts
from agts import positions

T0 = datetime(2026, 4, 3, 14, tzinfo=UTC)

with agts.temporary_database() as config, agts.connect(config, migrate=True) as engine:
    store = agts.ExecutionStore(engine)  # shares the engine's connections

    # The risk module's decision, then the order it allowed.
    order_id = uuid.uuid4()
    store.store_risk_decision(agts.RiskDecision(
        id=uuid.uuid4(), timestamp=T0, policy="max_position", decision="allow",
        reason="within limits", details={"limit": 2.0, "after": 0.5}, market="BTC-USD",
        order_id=order_id))
    order = agts.Order(id=order_id, timestamp=T0, venue="binance", market="BTC-USD", side="buy",
                       order_type="limit", price=60_000.0, size=0.5, status="new",
                       client_order_id=f"example-{order_id.hex[:8]}")
    print("stored:", store.store_order(order), "| again:", store.store_order(order))  # idempotent

    # Two partial fills and the lifecycle events.
    for i, (size, price) in enumerate([(0.2, 59_990.0), (0.3, 60_000.0)], start=1):
        at = T0 + timedelta(seconds=i)
        store.store_fill(agts.Fill(id=uuid.uuid4(), timestamp=at, order_id=order_id,
                                   venue="binance", market="BTC-USD", side="buy", price=price,
                                   size=size, fee=price * size * 0.0004, fee_currency="USD"))
        status = "filled" if i == 2 else "partially_filled"
        store.update_order_status(order_id, status, at, filled_size=0.2 if i == 1 else 0.5)

    state = store.order_state(order_id)
    print(f"order {state.client_order_id}: {state.status}, filled {state.filled_size} "
          f"at {state.avg_fill_price:.2f}")
    with pl.Config(tbl_cols=-1, tbl_width_chars=160):
        print(store.order_history(order_id).timeline())

    # A rule broken is refused with the constraint's name; nothing of the batch is written.
    try:
        store.update_order_status(order_id, "cancelled", T0 + timedelta(seconds=5))
    except agts.ConstraintError as exc:
        print("refused:", exc)

    # Close the position later at a higher price, with a market order.
    exit_id = uuid.uuid4()
    later = T0 + timedelta(minutes=30)
    store.store_orders([agts.Order(id=exit_id, timestamp=later, venue="binance",
                                   market="BTC-USD", side="sell", order_type="market",
                                   price=None, size=0.5, status="new",
                                   client_order_id=f"example-{exit_id.hex[:8]}")])
    store.store_fills(pl.DataFrame({
        "id": [str(uuid.uuid4())], "timestamp": [later + timedelta(milliseconds=40)],
        "order_id": [str(exit_id)], "venue": ["binance"], "market": ["BTC-USD"],
        "side": ["sell"], "price": [60_400.0], "size": [0.5], "fee": [12.08],
        "fee_currency": ["USD"]}))

    # Marks, positions and PnL from the stored fills.
    window = (T0 - timedelta(hours=1), T0 + timedelta(hours=1))
    store.store_quotes(pl.DataFrame({
        "timestamp": [T0 + timedelta(minutes=m) for m in range(0, 60, 5)],
        "venue": "binance", "market": "BTC-USD",
        "bid": [60_000.0 + 40 * m for m in range(12)], "ask": [60_010.0 + 40 * m for m in range(12)],
    }))
    fills = store.query_fills(*window, market="BTC-USD")
    marks = store.query_quotes("BTC-USD", *window)
    pnl = positions.from_fills(fills, method="fifo", marks=marks, mark_column="mid")
    print(pnl.select("timestamp", "side", "fill_size", "size", "avg_entry_price",
                     "realized_pnl", "fees", "net_pnl"))
    curve = positions.mark_to_market(pnl, marks, mark_column="mid")
    print(f"PnL curve: {curve.height} marks, final net PnL {curve['net_pnl'][-1]:.2f} USD")

    # The bot's own snapshots, reconciled with the fills.
    snapshot = pnl.row(1, named=True)  # after the second fill
    store.store_position_snapshot(agts.PositionSnapshot(
        timestamp=snapshot["timestamp"], market="BTC-USD", size=snapshot["size"],
        avg_entry_price=snapshot["avg_entry_price"], realized_pnl=snapshot["realized_pnl"]))
    differences = positions.reconcile(store.query_positions("BTC-USD", *window), pnl)
    print(f"snapshots vs fills: {differences.height} difference(s)")

    orders = store.query_orders(*window, agts.OrderFilters(market="BTC-USD", status="filled"))
    print(f"{orders.height} filled BTC-USD order(s); risk decisions:",
          store.query_risk_decisions(*window, decision="allow").height)
