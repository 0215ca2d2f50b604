from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from agts.sample import trading_day

START = datetime(2026, 1, 5, tzinfo=UTC)


def test_same_seed_same_frames_and_different_seed_differs() -> None:
    a = trading_day(seed=3, points=20_000, orders=300, start=START)
    b = trading_day(seed=3, points=20_000, orders=300, start=START)
    c = trading_day(seed=4, points=20_000, orders=300, start=START)
    for name in ("metrics", "quotes", "orders", "order_events", "fills", "risk_decisions"):
        assert getattr(a, name).equals(getattr(b, name)), name
    assert not a.fills.equals(c.fills)


def test_shapes_types_and_time_range() -> None:
    day = trading_day(seed=1, points=30_000, orders=500, start=START, hours=6)
    end = START + timedelta(hours=6)
    assert abs(day.metrics.height - 30_000) <= 300
    assert day.metrics.schema == pl.Schema({
        "timestamp": pl.Datetime("us", "UTC"), "metric_name": pl.String, "value": pl.Float64,
        "labels": pl.String})
    for frame in (day.metrics, day.quotes, day.orders):
        assert frame["timestamp"].min() >= START
        assert frame["timestamp"].max() < end
    assert day.metrics["metric_name"].n_unique() >= 5
    assert day.orders["id"].n_unique() == 500
    assert day.orders["client_order_id"].n_unique() == 500


def test_fills_are_consistent_with_orders() -> None:
    day = trading_day(seed=2, points=5_000, orders=400, start=START)
    joined = day.fills.join(day.orders, left_on="order_id", right_on="id", suffix="_order")
    assert joined.height == day.fills.height  # every fill has its order
    assert (joined["market"] == joined["market_order"]).all()
    assert (joined["side"] == joined["side_order"]).all()
    assert (joined["timestamp"] > joined["timestamp_order"]).all()
    filled = joined.group_by("order_id").agg(pl.col("size").sum(), pl.col("size_order").first())
    assert (filled["size"] <= filled["size_order"] + 1e-9).all()
    final = day.order_events.sort("timestamp").group_by("order_id").agg(pl.col("status").last())
    fully = final.filter(pl.col("status") == "filled").join(filled, on="order_id")
    assert ((fully["size"] - fully["size_order"]).abs() < 1e-6).all()
    assert (day.fills["fee"] > 0).all()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="must be positive, got 0"):
        trading_day(points=0)
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        trading_day(start=datetime(2026, 1, 1))
