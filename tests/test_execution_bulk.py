"""Bulk paths end to end: 100k fills from one frame, a sample trading day, reconciliation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

import agts
from agts import positions
from agts.sample import trading_day

START = datetime(2024, 1, 1, tzinfo=UTC)
WIDE = (START - timedelta(days=30), START + timedelta(days=30))


def _orders_and_fills(n_orders: int, n_fills: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(5)
    ids = [str(uuid.UUID(int=10_000 + i)) for i in range(n_orders)]
    market = np.array(["BTC-USD", "ETH-USD"])[np.arange(n_orders) % 2]
    side = np.array(["buy", "sell"])[(np.arange(n_orders) // 2) % 2]
    orders = pl.DataFrame({
        "id": ids, "timestamp": [START] * n_orders, "venue": "kraken", "market": market,
        "side": side, "order_type": "market", "price": None, "size": 1e6, "status": "new",
        "client_order_id": [f"bulk-{i}" for i in range(n_orders)],
    }, schema_overrides={"price": pl.Float64})
    pick = rng.integers(0, n_orders, n_fills)
    fills = pl.DataFrame({
        "id": [str(uuid.UUID(int=1_000_000 + i)) for i in range(n_fills)],
        "timestamp": pl.Series(int(START.timestamp()) * 1_000_000 + 1_000 * np.arange(
            1, n_fills + 1)).cast(pl.Datetime("us", "UTC")),
        "order_id": [ids[i] for i in pick], "venue": "kraken", "market": market[pick],
        "side": side[pick], "price": np.round(rng.uniform(90, 110, n_fills), 2),
        "size": np.round(rng.uniform(0.1, 1.0, n_fills), 3), "fee": 0.01, "fee_currency": "USD",
    })
    return orders, fills


def test_100k_fills_from_one_frame_in_one_call(engine: agts.StorageEngine) -> None:
    store = agts.ExecutionStore(engine)
    orders, fills = _orders_and_fills(200, 100_000)
    assert store.store_orders(orders) == 200
    assert store.store_fills(fills) == 100_000
    assert store.store_fills(fills) == 0  # the retry of a whole batch is a no-op
    back = store.query_fills(*WIDE)
    assert back.height == 100_000
    assert back.equals(fills.select(back.columns))
    state = store.query_orders(*WIDE)
    assert state["fill_count"].sum() == 100_000
    assert state["filled_size"].sum() == pytest.approx(fills["size"].sum())


def test_reconcile_stored_snapshots_against_stored_fills(engine: agts.StorageEngine) -> None:
    store = agts.ExecutionStore(engine)
    orders, fills = _orders_and_fills(20, 2_000)
    store.store_orders(orders)
    store.store_fills(fills)
    derived = positions.from_fills(store.query_fills(*WIDE))
    # the bot snapshots its position every 100 fills; one snapshot is wrong
    snaps = (derived.gather_every(100).select(
        "timestamp", "market", "size", pl.col("avg_entry_price").fill_null(0.0), "realized_pnl")
        .with_columns(pl.lit(None, pl.Float64).alias("unrealized_pnl")))
    planted_at = snaps["timestamp"][7]
    planted = snaps.with_columns(
        pl.when(pl.col("timestamp") == planted_at).then(pl.col("realized_pnl") + 12.5)
        .otherwise(pl.col("realized_pnl")).alias("realized_pnl"))
    assert store.store_position_snapshots(planted) == planted.height
    stored = pl.concat([store.query_positions(m, *WIDE) for m in ("BTC-USD", "ETH-USD")])
    diff = positions.reconcile(stored, derived, tolerance=1e-6)
    assert diff.select("timestamp", "field").rows() == [(planted_at, "realized_pnl")]
    assert diff["difference"][0] == pytest.approx(12.5)


def test_a_sample_trading_day_round_trips(engine: agts.StorageEngine) -> None:
    day = trading_day(seed=3, points=2_000, orders=200)
    store = agts.ExecutionStore(engine)
    assert store.store_quotes(day.quotes) == day.quotes.height
    assert store.store_risk_decisions(day.risk_decisions) == day.risk_decisions.height
    assert store.store_orders(day.orders) == day.orders.height
    assert store.store_fills(day.fills) == day.fills.height
    assert store.store_order_events(day.order_events) == day.order_events.height
    window = (day.start, day.start + timedelta(days=1))
    orders = store.query_orders(*window)
    last = day.order_events.sort("timestamp").group_by("order_id").agg(
        pl.col("status").last())
    expected = dict(zip(last["order_id"], last["status"], strict=True))
    got = dict(zip(orders["id"], orders["status"], strict=True))
    assert {k: got[k] for k in expected} == expected
    assert (orders.filter(~pl.col("id").is_in(list(expected)))["status"] == "new").all()
    quotes = store.query_quotes(["BTC-USD", "ETH-USD", "SOL-USD"], *window)
    curve = positions.mark_to_market(positions.from_fills(store.query_fills(*window)), quotes)
    assert curve.height == quotes.height
    assert curve["net_pnl"].is_not_null().all()
