"""Hot ∪ cold: a range spanning the archive boundary reads as before archiving, every row once."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts
from agts import Fill, Order

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)  # metric chunks are 1 day wide
WEEK0 = datetime(2024, 1, 4, tzinfo=UTC)  # a Thursday: execution chunks are 7 days, epoch-aligned
AGGS = ["avg", "sum", "count", "min", "max", "p50", "p90", "stddev", "first", "last"]


def _points(days: int = 3, per_day: int = 480) -> pl.DataFrame:
    n = days * per_day
    step = timedelta(days=1) / per_day
    rng = np.random.default_rng(7)
    return pl.DataFrame({
        "timestamp": pl.Series([DAY0 + i * step for i in range(n)], dtype=pl.Datetime("us", "UTC")),
        "metric_name": ["latency" if i % 4 else "pnl" for i in range(n)],
        "value": rng.normal(100.0, 15.0, n),
        "labels": [{"venue": "x"} if i % 2 else {"venue": "y", "desk": "a"} for i in range(n)],
    })


def _archive(engine: agts.StorageEngine, table: str, start: datetime, end: datetime) -> None:
    report = engine.archive(table, start, end, drop=True)
    assert report.units_dropped >= 1


# -- metrics ---------------------------------------------------------------------------------

SPAN = (DAY0 + timedelta(hours=7), DAY0 + timedelta(days=2, hours=5))  # crosses day 1 -> day 2


@pytest.mark.parametrize("labels", [None, {"venue": "y"}], ids=["all-series", "labels"])
def test_metrics_all_equals_the_frame_before_archiving(arch: agts.StorageEngine,
                                                       labels: Any) -> None:
    arch.insert_metrics_batch(_points())
    before = arch.query_metrics("latency", *SPAN, labels)
    assert before.height > 0

    _archive(arch, "metrics", DAY0, DAY0 + timedelta(days=2))

    after = arch.query_metrics("latency", *SPAN, labels, tiers="all")
    assert_frame_equal(after, before, check_exact=True)
    hot = arch.query_metrics("latency", *SPAN, labels, tiers="hot")
    cold = arch.query_metrics("latency", *SPAN, labels, tiers="cold")
    boundary = DAY0 + timedelta(days=2)
    assert_frame_equal(hot, before.filter(pl.col("timestamp") >= boundary), check_exact=True)
    assert_frame_equal(cold, before.filter(pl.col("timestamp") < boundary), check_exact=True)
    assert hot.height > 0 and cold.height > 0


def test_metrics_pages_across_the_boundary(arch: agts.StorageEngine) -> None:
    arch.insert_metrics_batch(_points())
    before = arch.query_metrics("latency", *SPAN)
    _archive(arch, "metrics", DAY0, DAY0 + timedelta(days=2))

    pages, after = [], None
    while True:
        page = arch.query_metrics("latency", *SPAN, limit=97, after=after, tiers="all")
        if page.is_empty():
            break
        pages.append(page)
        after = agts.next_cursor(page)
    assert_frame_equal(pl.concat(pages), before, check_exact=True)


def test_restore_then_all_has_no_duplicates(arch: agts.StorageEngine) -> None:
    arch.insert_metrics_batch(_points())
    before = arch.query_metrics("latency", *SPAN)
    _archive(arch, "metrics", DAY0, DAY0 + timedelta(days=2))
    assert arch.restore("metrics", DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)) > 0

    assert_frame_equal(arch.query_metrics("latency", *SPAN, tiers="all"), before,
                       check_exact=True)
    cold = arch.query_metrics("latency", *SPAN, tiers="cold")
    assert cold.get_column("timestamp").max() < DAY0 + timedelta(days=1)  # type: ignore[operator]


@pytest.mark.parametrize(("bucket", "group_by", "window"), [
    pytest.param("3h", None, SPAN, id="3h"),
    pytest.param("1h", ["venue"], (DAY0, DAY0 + timedelta(days=3)), id="1h-by-venue-rollup"),
    pytest.param("5d", None, SPAN, id="one-bucket"),
])
def test_aggregated_all_equals_timescaledb_before_archiving(
        arch: agts.StorageEngine, bucket: str, group_by: list[str] | None,
        window: tuple[datetime, datetime]) -> None:
    arch.insert_metrics_batch(_points())
    arch.refresh_rollups()
    before = arch.query_aggregated("latency", *window, bucket, AGGS, group_by=group_by)

    _archive(arch, "metrics", DAY0, DAY0 + timedelta(days=2))

    after = arch.query_aggregated("latency", *window, bucket, AGGS, group_by=group_by,
                                  tiers="all")
    # counts, min, max, first, last and percentiles exact; sums in another order: rounding only
    assert_frame_equal(after, before, check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    exact = ["timestamp", *(group_by or []), "count", "min", "max", "p50", "p90", "first", "last"]
    assert_frame_equal(after.select(exact), before.select(exact), check_exact=True)


def test_aggregated_cold_and_fill(arch: agts.StorageEngine) -> None:
    arch.insert_metrics_batch(_points(days=2))
    before = arch.query_aggregated("latency", DAY0, DAY0 + timedelta(days=3), "6h", ["avg", "count"],
                                   fill="null")
    _archive(arch, "metrics", DAY0, DAY0 + timedelta(days=1))

    cold = arch.query_aggregated("latency", DAY0, DAY0 + timedelta(days=3), "6h",
                                 ["avg", "count"], tiers="cold")
    assert cold.height == 4 and cold.get_column("count").sum() == 360
    after = arch.query_aggregated("latency", DAY0, DAY0 + timedelta(days=3), "6h",
                                  ["avg", "count"], fill="null", tiers="all")
    assert after.height == 12
    assert_frame_equal(after, before, check_exact=False, rel_tol=1e-12, abs_tol=0.0)


# -- execution -------------------------------------------------------------------------------

def _history(store: agts.ExecutionStore) -> None:
    """84 orders every 6 hours over 3 weeks; even orders filled in two parts (the second two days
    later, so across a chunk edge for some), a third of the odd ones cancelled a day later."""
    orders, fills = [], []
    for i in range(84):
        t = WEEK0 + timedelta(hours=6 * i)
        market = ("BTC-USD", "ETH-USD")[i % 2 == 0 and i % 3 == 0]
        venue = ("binance", "okx")[i % 4 < 2]
        oid = uuid.UUID(int=1000 + i)
        orders.append(Order(id=oid, timestamp=t, venue=venue, market=market, side="buy",
                            order_type="limit", price=100.0 + i, size=1.0 + i % 3, status="new",
                            client_order_id=f"cl-{i}"))
        if i % 2 == 0:
            for k, (dt, frac) in enumerate([(timedelta(minutes=1), 0.25),
                                            (timedelta(days=2), 0.5)]):
                fills.append(Fill(id=uuid.UUID(int=50_000 + 2 * i + k), timestamp=t + dt,
                                  order_id=oid, venue=venue, market=market, side="buy",
                                  price=100.0 + i + 0.1 * k, size=frac * (1.0 + i % 3),
                                  fee=0.01, fee_currency="USD"))
    assert store.store_orders(orders) == 84
    assert store.store_fills(fills) == 84
    for i in range(1, 84, 6):
        assert store.update_order_status(uuid.UUID(int=1000 + i), "cancelled",
                                         WEEK0 + timedelta(hours=6 * i, days=1))


EXEC_SPAN = (WEEK0 + timedelta(days=10), WEEK0 + timedelta(days=19))  # crosses WEEK0 + 14d

QUERIES: list[Any] = [
    pytest.param(lambda s, t: s.query_orders(*EXEC_SPAN, tiers=t), id="orders"),
    pytest.param(lambda s, t: s.query_orders(*EXEC_SPAN, agts.OrderFilters(
        market="ETH-USD", status=["new", "cancelled"]), tiers=t), id="orders-filtered"),
    pytest.param(lambda s, t: s.query_orders(*EXEC_SPAN, agts.OrderFilters(status="cancelled"),
                                             tiers=t), id="orders-cancelled"),
    pytest.param(lambda s, t: s.query_fills(*EXEC_SPAN, tiers=t), id="fills"),
    pytest.param(lambda s, t: s.query_fills(*EXEC_SPAN, venue="okx", tiers=t), id="fills-venue"),
    pytest.param(lambda s, t: s.query_fills(*EXEC_SPAN, order_id=uuid.UUID(int=1040), tiers=t),
                 id="fills-order"),
]


@pytest.mark.parametrize("query", QUERIES)
def test_execution_all_equals_the_frame_before_archiving(
        arch: agts.StorageEngine, query: Callable[[agts.ExecutionStore, str], pl.DataFrame]) -> None:
    store = agts.ExecutionStore(arch)
    _history(store)
    before = query(store, "hot")
    assert before.height > 0
    for table in ("orders", "order_events", "fills"):
        _archive(arch, table, WEEK0, WEEK0 + timedelta(days=14))

    assert_frame_equal(query(store, "all"), before, check_exact=True)
    boundary = WEEK0 + timedelta(days=14)
    hot, cold = query(store, "hot"), query(store, "cold")
    assert_frame_equal(cold, before.filter(pl.col("timestamp") < boundary), check_exact=True)
    assert set(hot.columns) == set(before.columns) and hot.schema == before.schema
    assert hot.height == before.filter(pl.col("timestamp") >= boundary).height


def test_hot_orders_count_their_archived_fills(arch: agts.StorageEngine) -> None:
    """Fills archived while their orders stay hot: "all" still sees every fill in the state."""
    store = agts.ExecutionStore(arch)
    _history(store)
    before = store.query_orders(WEEK0, WEEK0 + timedelta(days=21))
    _archive(arch, "fills", WEEK0, WEEK0 + timedelta(days=14))
    assert_frame_equal(store.query_orders(WEEK0, WEEK0 + timedelta(days=21), tiers="all"), before,
                       check_exact=True)
    hot_only = store.query_orders(WEEK0, WEEK0 + timedelta(days=21))
    assert hot_only.get_column("fill_count").sum() < before.get_column("fill_count").sum()


def test_restore_fills_then_all_has_no_duplicates(arch: agts.StorageEngine) -> None:
    store = agts.ExecutionStore(arch)
    _history(store)
    before = store.query_fills(*EXEC_SPAN)
    _archive(arch, "fills", WEEK0, WEEK0 + timedelta(days=14))
    assert arch.restore("fills", WEEK0, WEEK0 + timedelta(days=14)) > 0
    assert_frame_equal(store.query_fills(*EXEC_SPAN, tiers="all"), before, check_exact=True)
    assert store.query_fills(*EXEC_SPAN, tiers="cold").is_empty()


def test_other_execution_tables(arch: agts.StorageEngine) -> None:
    store = agts.ExecutionStore(arch)
    stamps = [WEEK0 + timedelta(hours=12 * i) for i in range(40)]
    store.store_position_snapshots(pl.DataFrame({
        "timestamp": stamps, "market": ["BTC-USD"] * 40, "size": [float(i) for i in range(40)],
        "avg_entry_price": [100.0] * 40, "unrealized_pnl": [0.5] * 40,
        "realized_pnl": [1.5] * 40}))
    store.store_quotes(pl.DataFrame({
        "timestamp": stamps * 2, "venue": ["okx"] * 40 + ["binance"] * 40,
        "market": ["BTC-USD"] * 80, "bid": [99.0] * 80, "ask": [101.0] * 80}))
    store.store_risk_decisions([agts.RiskDecision(
        id=uuid.UUID(int=9000 + i), timestamp=t, policy="max_position",
        decision=("allow", "deny")[i % 2], reason="r", details={"limit": float(i)},
        market="BTC-USD", order_id=None) for i, t in enumerate(stamps)])
    calls: list[Callable[[Any], pl.DataFrame]] = [
        lambda t: store.query_positions("BTC-USD", *EXEC_SPAN, tiers=t),
        lambda t: store.query_quotes("BTC-USD", *EXEC_SPAN, tiers=t),
        lambda t: store.query_quotes("BTC-USD", *EXEC_SPAN, venue="okx", tiers=t),
        lambda t: store.query_risk_decisions(*EXEC_SPAN, decision="deny", tiers=t),
    ]
    befores = [call("hot") for call in calls]
    for table in ("position_snapshots", "market_quotes", "risk_decisions"):
        _archive(arch, table, WEEK0, WEEK0 + timedelta(days=14))
    for call, before in zip(calls, befores, strict=True):
        assert_frame_equal(call("all"), before, check_exact=True)
        assert call("cold").height + call("hot").height == before.height


# -- arguments -------------------------------------------------------------------------------

TIER_ERRORS = [
    pytest.param(lambda e: e.query_metrics("m", DAY0, DAY0, tiers="warm"),
                 r"tiers must be one of \('hot', 'cold', 'all'\), got 'warm'", id="metrics"),
    pytest.param(lambda e: e.query_aggregated("m", DAY0, DAY0, "1h", "avg", tiers=None),
                 r"tiers must be one of \('hot', 'cold', 'all'\), got None", id="aggregated"),
    pytest.param(lambda e: agts.ExecutionStore(e).query_fills(DAY0, DAY0, tiers="ALL"),  # type: ignore[arg-type]
                 r"tiers must be one of .*got 'ALL'", id="fills"),
    pytest.param(lambda e: agts.ExecutionStore(e).query_orders(DAY0, DAY0, tiers=1),  # type: ignore[arg-type]
                 r"tiers must be one of .*got 1", id="orders"),
    pytest.param(lambda e: e.query_metrics("m", DAY0, DAY0, iter_batches=True, tiers="all"),
                 r"iter_batches=True reads the hot tier only, got tiers='all'", id="iter-batches"),
]


@pytest.mark.parametrize(("call", "message"), TIER_ERRORS)
def test_tiers_argument_errors(engine: agts.StorageEngine, call: Callable[[Any], Any],
                               message: str) -> None:
    with pytest.raises(agts.ValidationError, match=message):
        call(engine)


def test_all_without_archive_equals_hot(engine: agts.StorageEngine) -> None:
    engine.insert_metrics_batch(_points(days=1))
    window = (DAY0, DAY0 + timedelta(days=1))
    assert_frame_equal(engine.query_metrics("pnl", *window, tiers="all"),
                       engine.query_metrics("pnl", *window), check_exact=True)
    assert_frame_equal(engine.query_aggregated("pnl", *window, "1h", AGGS, tiers="all"),
                       engine.query_aggregated("pnl", *window, "1h", AGGS), check_exact=True)
    assert engine.query_metrics("pnl", *window, tiers="cold").is_empty()


def test_cached_hot_results_do_not_outlive_an_archive_drop_or_a_restore(arch: agts.StorageEngine) -> None:
    """The cache serves closed ranges; dropping or restoring their rows must void the entries."""
    arch.insert_metrics_batch(_points())
    first = arch.query_metrics("latency", *SPAN)
    assert arch.query_metrics("latency", *SPAN).equals(first)  # served from the cache
    stats = arch.query_stats()
    assert stats.filter(pl.col("kind") == "raw")["cache_hits"].sum() >= 1

    _archive(arch, "metrics", DAY0, DAY0 + timedelta(days=2))
    hot = arch.query_metrics("latency", *SPAN)
    assert hot.get_column("timestamp").min() >= DAY0 + timedelta(days=2)  # type: ignore[operator]

    arch.restore("metrics", DAY0, DAY0 + timedelta(days=2))
    assert_frame_equal(arch.query_metrics("latency", *SPAN), first, check_exact=True)
