"""ExecutionStore against a real TimescaleDB: idempotency, conflicts, constraints, lifecycle."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import polars as pl
import psycopg
import pytest

import agts
from agts import Fill, Order, PositionSnapshot, RiskDecision
from agts.db import conninfo

T0 = datetime(2024, 3, 1, 12, tzinfo=UTC)
DAY = (T0 - timedelta(days=1), T0 + timedelta(days=1))


def _order(**changes: Any) -> Order:
    base = Order(id=uuid.UUID(int=1), timestamp=T0, venue="binance", market="BTC-USD", side="buy",
                 order_type="limit", price=60_000.0, size=0.5, status="new",
                 client_order_id="cl-1")
    return replace(base, **changes)


def _fill(**changes: Any) -> Fill:
    base = Fill(id=uuid.UUID(int=101), timestamp=T0 + timedelta(seconds=1),
                order_id=uuid.UUID(int=1), venue="binance", market="BTC-USD", side="buy",
                price=60_000.0, size=0.2, fee=2.4, fee_currency="USD")
    return replace(base, **changes)


def _snapshot(**changes: Any) -> PositionSnapshot:
    base = PositionSnapshot(timestamp=T0, market="BTC-USD", size=0.2, avg_entry_price=60_000.0,
                            unrealized_pnl=0.0, realized_pnl=0.0)
    return replace(base, **changes)


def _decision(**changes: Any) -> RiskDecision:
    base = RiskDecision(id=uuid.UUID(int=201), timestamp=T0, policy="max_position",
                        decision="allow", reason="within limits", details={"limit": 1.0},
                        market="BTC-USD", order_id=uuid.UUID(int=1))
    return replace(base, **changes)


@pytest.fixture
def store(engine: agts.StorageEngine) -> agts.ExecutionStore:
    return agts.ExecutionStore(engine)


@pytest.fixture
def placed(store: agts.ExecutionStore) -> agts.ExecutionStore:
    """A store with the base order stored."""
    assert store.store_order(_order())
    return store


def _count(engine: agts.StorageEngine, table: str) -> int:
    with engine.db.connection() as conn:
        row = conn.execute(
            psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier("agts", table))
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- idempotency ---------------------------------------------------------------------------

def test_storing_the_same_records_again_is_a_no_op(placed: agts.ExecutionStore,
                                                   engine: agts.StorageEngine) -> None:
    store = placed
    assert store.store_order(_order()) is False
    assert store.store_fill(_fill()) is True
    assert store.store_fill(_fill()) is False
    assert store.store_position_snapshot(_snapshot()) is True
    assert store.store_position_snapshot(_snapshot()) is False
    assert store.store_risk_decision(_decision()) is True
    assert store.store_risk_decision(_decision()) is False
    quotes = pl.DataFrame({"timestamp": [T0], "venue": ["binance"], "market": ["BTC-USD"],
                           "bid": [59_999.0], "ask": [60_001.0]})
    assert store.store_quotes(quotes) == 1
    assert store.store_quotes(quotes) == 0
    # the same rows twice inside one batch count once
    assert store.store_fills([_fill(id=uuid.UUID(int=102)), _fill(id=uuid.UUID(int=102))]) == 1
    counts = {t: _count(engine, t) for t in ("order_ids", "orders", "order_events", "fills",
                                              "position_snapshots", "risk_decisions",
                                              "market_quotes")}
    assert counts == {"order_ids": 1, "orders": 1, "order_events": 1, "fills": 2,
                      "position_snapshots": 1, "risk_decisions": 1, "market_quotes": 1}


# -- conflicts -----------------------------------------------------------------------------

CONFLICTS = [
    pytest.param(lambda s: s.store_order(_order(price=60_001.0)),
                 r"order id='00000000-0000-0000-0000-000000000001' is already stored with a "
                 r"different payload: price is '60000' stored, '60001' given "
                 r"\(constraint 'order_ids_pkey'\)", id="order-price"),
    pytest.param(lambda s: s.store_order(_order(timestamp=T0 + timedelta(seconds=5))),
                 "timestamp is '2024-03-01 12:00:00[+]00' stored, '2024-03-01 12:00:05[+]00' given",
                 id="order-timestamp"),
    pytest.param(lambda s: s.store_fill(_fill(fee=9.9)),
                 r"fill id='00000000-0000-0000-0000-000000000065' is already stored with a "
                 r"different payload: fee is '2.4' stored, '9.9' given", id="fill-fee"),
    pytest.param(lambda s: s.store_fill(_fill(timestamp=T0 + timedelta(days=30))),
                 "fill id=.* timestamp is '2024-03-01 12:00:01[+]00' stored", id="fill-other-chunk"),
    pytest.param(lambda s: s.store_position_snapshot(_snapshot(size=0.3)),
                 r"position snapshot market='BTC-USD', timestamp='2024-03-01 12:00:00\+00' is "
                 r"already stored with a different payload: size is '0.2' stored, '0.3' given",
                 id="snapshot-size"),
    pytest.param(lambda s: s.store_risk_decision(_decision(details={"limit": 2.0})),
                 """details is '{"limit": 1.0}' stored, '{"limit": 2.0}' given""",
                 id="risk-details"),
    pytest.param(lambda s: s.store_fills([_fill(id=uuid.UUID(int=7)),
                                          _fill(id=uuid.UUID(int=7), size=0.1)]),
                 "fill id='00000000-0000-0000-0000-000000000007' appears more than once in the "
                 "batch with different payloads", id="fill-within-batch"),
    pytest.param(lambda s: s.update_order_status(uuid.UUID(int=1), "new", T0, reason="again"),
                 r"order event order_id=.*, timestamp='2024-03-01 12:00:00\+00', status='new' is "
                 r"already stored with a different payload: reason is None stored, 'again' given",
                 id="event-reason"),
]


@pytest.mark.parametrize(("call", "message"), CONFLICTS)
def test_a_different_payload_under_a_stored_key_is_a_conflict(
        placed: agts.ExecutionStore, call: Callable[[agts.ExecutionStore], Any],
        message: str) -> None:
    placed.store_fill(_fill())
    placed.store_position_snapshot(_snapshot())
    placed.store_risk_decision(_decision())
    with pytest.raises(agts.ConflictError, match=message) as info:
        call(placed)
    assert info.value.constraint is not None
    assert info.value.transient is False


# -- constraints ---------------------------------------------------------------------------

CONSTRAINTS = [
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), side="long")),
                 "orders_side_check", "order column 'side' must be one of 'buy', 'sell', got "
                 "'long' [(]row 0[)]", id="order-side"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), order_type="iceberg")),
                 "orders_order_type_check", "order column 'order_type' must be one of 'market', "
                 "'limit', .*, got 'iceberg'", id="order-type"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), status="done")),
                 "orders_status_check", "order column 'status' must be one of .*, got 'done'",
                 id="order-status"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), size=0.0)),
                 "orders_size_check", "order column 'size' must be a positive finite number, got 0.0",
                 id="order-size-zero"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), size=float("nan"))),
                 "orders_size_check", "got nan", id="order-size-nan"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), price=-1.0)),
                 "orders_price_check", "order column 'price' must be a positive finite number, got "
                 "-1.0", id="order-price"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), price=None)),
                 "orders_limit_price_check", "order column 'price' must be set for order types "
                 "'limit', 'stop_limit', 'take_profit_limit', got None", id="limit-price"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.uuid4(), venue=None)),
                 "not_null", "order column 'venue' must not be null, got None", id="order-null"),
    pytest.param(lambda s: s.store_order(_order(id=uuid.UUID(int=2))),
                 "order_ids_client_order_id_key", "client_order_id 'cl-1' is used by order "
                 "'00000000-0000-0000-0000-000000000001', cannot store it for order "
                 "'00000000-0000-0000-0000-000000000002'", id="client-order-id"),
    pytest.param(lambda s: s.store_orders([_order(id=uuid.UUID(int=3), client_order_id="x"),
                                           _order(id=uuid.UUID(int=4), client_order_id="x")]),
                 "order_ids_client_order_id_key", "client_order_id 'x' is used by order",
                 id="client-order-id-in-batch"),
    pytest.param(lambda s: s.store_fill(_fill(side="hold")), "fills_side_check",
                 "fill column 'side' must be one of 'buy', 'sell', got 'hold'", id="fill-side"),
    pytest.param(lambda s: s.store_fill(_fill(size=-0.1)), "fills_size_check",
                 "fill column 'size' must be a positive finite number, got -0.1", id="fill-size"),
    pytest.param(lambda s: s.store_fill(_fill(price=float("inf"))), "fills_price_check",
                 "got inf", id="fill-price"),
    pytest.param(lambda s: s.store_fill(_fill(fee=-0.01)), "fills_fee_check",
                 "fill column 'fee' must be a non-negative finite number, got -0.01",
                 id="fill-fee"),
    pytest.param(lambda s: s.store_fill(_fill(order_id=uuid.UUID(int=99))), "fills_order_fkey",
                 "order_id '00000000-0000-0000-0000-000000000063' of fill "
                 "'00000000-0000-0000-0000-000000000065' is not a stored order",
                 id="fill-unknown-order"),
    pytest.param(lambda s: s.store_fill(_fill(market="ETH-USD")), "fills_order_fkey",
                 "market 'ETH-USD' of fill .* differs from its order's market 'BTC-USD'",
                 id="fill-other-market"),
    pytest.param(lambda s: s.store_fill(_fill(side="sell")), "fills_order_fkey",
                 "side 'sell' of fill .* differs from its order's side 'buy'", id="fill-side-vs-order"),
    pytest.param(lambda s: s.store_position_snapshot(_snapshot(avg_entry_price=-5.0)),
                 "position_snapshots_avg_entry_price_check", "got -5.0", id="snapshot-avg"),
    pytest.param(lambda s: s.store_risk_decision(_decision(decision="maybe")),
                 "risk_decisions_decision_check", "must be one of 'allow', 'deny', 'reduce', "
                 "'halt', got 'maybe'", id="risk-decision"),
    pytest.param(lambda s: s.store_quotes(pl.DataFrame({
        "timestamp": [T0], "venue": ["v"], "market": ["m"], "bid": [101.0], "ask": [100.0]})),
                 "market_quotes_crossed_check", "column 'bid' must not exceed ask, got 101.0",
                 id="quote-crossed"),
    pytest.param(lambda s: s.update_order_status(uuid.UUID(int=98), "cancelled", T0),
                 "order_events_order_id_fkey", "order_id '00000000-0000-0000-0000-000000000062' "
                 "of a 'cancelled' event is not a stored order", id="event-unknown-order"),
    pytest.param(lambda s: s.update_order_status(uuid.UUID(int=1), "gone", T0),
                 "order_events_status_check", "got 'gone'", id="event-status"),
    pytest.param(lambda s: s.store_fill(_fill(size=0.6)), "fills_within_order_size",
                 "the fills of order '00000000-0000-0000-0000-000000000001' would add up to 0.6, "
                 r"above the order's size 0.5 \(allowed: the size \+ 1e-09 of it",
                 id="fill-above-order-size"),
    pytest.param(lambda s: s.store_fill(_fill(timestamp=T0 - timedelta(days=1))),
                 "fills_after_order", "fill '00000000-0000-0000-0000-000000000065' at "
                 "2024-02-29 12:00:00[+]00 is dated before its order "
                 "'00000000-0000-0000-0000-000000000001', placed at 2024-03-01 12:00:00[+]00",
                 id="fill-before-order"),
    pytest.param(lambda s: s.update_order_status(uuid.UUID(int=1), "filled", T0 + timedelta(1),
                                                 filled_size=10.0),
                 "order_events_filled_size_within_order", "a 'filled' event of order "
                 "'00000000-0000-0000-0000-000000000001' reports filled_size 10.0, above the "
                 "order's size 0.5", id="event-filled-size-above-order"),
]


@pytest.mark.parametrize(("call", "constraint", "message"), CONSTRAINTS)
def test_constraint_violations_name_constraint_column_and_value(
        placed: agts.ExecutionStore, engine: agts.StorageEngine,
        call: Callable[[agts.ExecutionStore], Any], constraint: str, message: str) -> None:
    before = {t: _count(engine, t) for t in ("order_ids", "orders", "fills", "order_events")}
    with pytest.raises(agts.ConstraintError, match=f"constraint '{constraint}' violated: (.* )?{message}"
                       ) as info:
        call(placed)
    assert not isinstance(info.value, agts.ConflictError)
    assert info.value.constraint == constraint
    assert {t: _count(engine, t) for t in before} == before


def test_the_database_enforces_the_same_constraints(engine: agts.StorageEngine) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="fills_fee_check"), \
            psycopg.connect(conninfo(engine.config.database)) as conn:
        conn.execute("INSERT INTO agts.order_ids VALUES (%s, %s, 'c', 'v', 'm', 'buy')",
                     (uuid.UUID(int=5), T0))
        conn.execute("INSERT INTO agts.fills VALUES (%s, %s, %s, 'v', 'm', 'buy', 1, 1, -1, 'USD')",
                     (uuid.UUID(int=6), T0, uuid.UUID(int=5)))
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="fills_order_fkey"), \
            psycopg.connect(conninfo(engine.config.database)) as conn:
        conn.execute("INSERT INTO agts.fills VALUES (%s, %s, %s, 'v', 'm', 'buy', 1, 1, 0, 'USD')",
                     (uuid.UUID(int=6), T0, uuid.UUID(int=5)))
    with pytest.raises(psycopg.errors.UniqueViolation, match="order_ids_client_order_id_key"), \
            psycopg.connect(conninfo(engine.config.database)) as conn:
        conn.execute("INSERT INTO agts.order_ids VALUES (%s, %s, 'c', 'v', 'm', 'buy'), "
                     "(%s, %s, 'c', 'v', 'm', 'buy')", (uuid.UUID(int=5), T0, uuid.UUID(int=7), T0))


def test_a_failing_batch_writes_nothing(placed: agts.ExecutionStore,
                                        engine: agts.StorageEngine) -> None:
    good = [_fill(id=uuid.UUID(int=300 + i), size=0.1) for i in range(5)]
    with pytest.raises(agts.ConstraintError, match="is not a stored order"):
        placed.store_fills([*good, _fill(id=uuid.UUID(int=399), order_id=uuid.UUID(int=42))])
    assert _count(engine, "fills") == 0
    assert placed.store_fills(good) == 5


def test_fills_add_up_to_at_most_their_order_over_calls_and_batches(
        store: agts.ExecutionStore, engine: agts.StorageEngine) -> None:
    """The issue's case: an order of 1.0, fills of 5.0 and 0.9, one a day early, a report of
    10.0. Every overfill is refused whole, across calls and within a batch; fills that fit are
    stored, float rounding of a sum is tolerated, and a resend adds nothing to the total."""
    store.store_order(_order(size=1.0))
    with pytest.raises(agts.ConstraintError, match="would add up to 5.0, above the order's size 1.0"):
        store.store_fill(_fill(size=5.0))
    assert store.store_fill(_fill(size=0.9))
    with pytest.raises(agts.ConstraintError, match="is dated before its order"):
        store.store_fill(_fill(id=uuid.UUID(int=102), size=0.05, timestamp=T0 - timedelta(days=1)))
    with pytest.raises(agts.ConstraintError, match="reports filled_size 10.0"):
        store.update_order_status(uuid.UUID(int=1), "filled", T0 + timedelta(minutes=1),
                                  filled_size=10.0)
    # A batch whose fills fit one by one but not together is refused whole.
    batch = [_fill(id=uuid.UUID(int=110 + i), size=0.06) for i in range(2)]
    with pytest.raises(agts.ConstraintError, match=r"would add up to 1.02\d*, above"):
        store.store_fills(batch)
    assert _count(engine, "fills") == 1
    # The original fill again is a no-op and adds nothing; 0.1 fits (0.9 + 0.1 = 1.0 exactly).
    assert store.store_fills([_fill(size=0.9), _fill(id=uuid.UUID(int=120), size=0.1)]) == 1
    assert store.store_fill(_fill(size=0.9)) is False
    state = store.order_state(uuid.UUID(int=1))
    assert (state.size, state.filled_size) == (1.0, 1.0)
    with pytest.raises(agts.ConstraintError, match="fills_within_order_size"):
        store.store_fill(_fill(id=uuid.UUID(int=121), size=1e-6))
    assert store.update_order_status(uuid.UUID(int=1), "filled", T0 + timedelta(minutes=1),
                                     filled_size=1.0)
    with engine.db.connection() as conn:
        assert conn.execute("SELECT size, filled_size FROM agts.order_ids").fetchone() == (1.0, 1.0)


def test_an_order_as_large_as_a_double_allows_does_not_stop_other_fills(
        store: agts.ExecutionStore) -> None:
    """The overfill check is a difference: size * (1 + tolerance) overflowed for an order of
    1.79e308 and refused every fill of every order."""
    store.store_order(_order(size=1.7976931348e308))
    store.store_order(_order(id=uuid.UUID(int=2), client_order_id="cl-2", size=1.0))
    assert store.store_fills([_fill(size=1e308), _fill(id=uuid.UUID(int=140), order_id=uuid.UUID(
        int=2), size=0.5)]) == 2
    assert store.update_order_status(uuid.UUID(int=1), "partially_filled", T0 + timedelta(1),
                                     filled_size=1e308)


def test_float_rounding_of_a_sum_of_fills_is_tolerated(store: agts.ExecutionStore) -> None:
    store.store_order(_order(size=0.3))
    assert store.store_fills([_fill(id=uuid.UUID(int=130), size=0.1),
                              _fill(id=uuid.UUID(int=131), size=0.2)]) == 2  # 0.30000000000000004
    assert store.order_state(uuid.UUID(int=1)).filled_size == pytest.approx(0.3)


@pytest.mark.parametrize(("data", "error", "message"), [
    pytest.param(pl.DataFrame({"id": ["not-a-uuid"]}), agts.ValidationError,
                 r"lacks column\(s\) \['timestamp'", id="missing"),
    pytest.param(pl.DataFrame({"ident": ["x"]}), agts.ValidationError,
                 r"unknown fill column\(s\) \['ident'\]", id="unknown"),
    pytest.param("fills.csv", agts.ValidationError, "must be a polars or pandas DataFrame",
                 id="wrong-type"),
    pytest.param([_fill(id="nope")], agts.ValidationError, "id must be a UUID, got 'nope'",
                 id="bad-uuid"),
    pytest.param([_fill(timestamp="yesterday")], agts.ValidationError,
                 "timestamp must be a datetime, a date, an ISO 8601 string or a numpy.datetime64, "
                 "got 'yesterday'", id="bad-time"),
    pytest.param([_fill(timestamp=12.5)], agts.ValidationError,
                 "column 'timestamp' must hold datetimes, dates or ISO 8601 text, got dtype Float64",
                 id="number-time"),
])
def test_malformed_input_is_refused_before_any_io(store: agts.ExecutionStore, data: Any,
                                                  error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        store.store_fills(data)


# -- lifecycle -----------------------------------------------------------------------------

def test_order_lifecycle_history_and_current_state(placed: agts.ExecutionStore) -> None:
    store, oid = placed, uuid.UUID(int=1)
    assert store.order_state(oid).status == "new"
    store.store_fill(_fill(size=0.2))
    assert store.update_order_status(oid, "partially_filled", T0 + timedelta(seconds=1),
                                     filled_size=0.2)
    store.store_fill(_fill(id=uuid.UUID(int=102), timestamp=T0 + timedelta(seconds=2), size=0.3,
                           price=60_010.0, fee=3.6))
    assert store.update_order_status(oid, "filled", T0 + timedelta(seconds=2), filled_size=0.5)
    # a retry of the same event is a no-op
    assert not store.update_order_status(oid, "filled", T0 + timedelta(seconds=2),
                                         filled_size=0.5)
    # late evidence from before the final status is accepted ...
    assert store.update_order_status(oid, "pending_cancel", T0 + timedelta(seconds=1.5))
    # ... but nothing may follow a final status
    with pytest.raises(agts.ConstraintError, match=(
            "constraint 'order_lifecycle' violated: order '00000000-0000-0000-0000-000000000001' "
            "is 'filled' since 2024-03-01 12:00:02[+]00; status 'cancelled' at 2024-03-01 "
            "12:00:03[+]00 cannot follow a final status")):
        store.update_order_status(oid, "cancelled", T0 + timedelta(seconds=3))

    state = store.order_state(str(oid))
    assert (state.status, state.size, state.filled_size, state.fill_count) == ("filled", 0.5,
                                                                                0.5, 2)
    assert state.status_time == T0 + timedelta(seconds=2)
    assert state.avg_fill_price == pytest.approx((0.2 * 60_000 + 0.3 * 60_010) / 0.5)
    assert state.remaining_size == 0.0

    history = store.order_history(oid)
    assert history.order == _order(id=str(oid))
    assert history.events["status"].to_list() == ["new", "partially_filled", "pending_cancel",
                                                  "filled"]
    assert history.events["filled_size"].to_list() == [None, 0.2, None, 0.5]
    assert history.fills["size"].to_list() == [0.2, 0.3]
    assert history.timeline()["kind"].to_list() == ["status", "fill", "status", "status", "fill",
                                                    "status"]
    with pytest.raises(agts.QueryError, match="no order with id"):
        store.order_state(uuid.UUID(int=77))


def test_store_order_events_in_bulk(placed: agts.ExecutionStore) -> None:
    events = pl.DataFrame({
        "timestamp": [T0 + timedelta(seconds=s) for s in (1, 2)],
        "order_id": [str(uuid.UUID(int=1))] * 2,
        "status": ["partially_filled", "cancelled"], "filled_size": [0.1, 0.1],
    })
    assert placed.store_order_events(events) == 2
    assert placed.store_order_events(events) == 0
    assert placed.order_state(uuid.UUID(int=1)).status == "cancelled"


# -- queries -------------------------------------------------------------------------------

def _orders_frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "id": [str(uuid.UUID(int=1000 + i)) for i in range(n)],
        "timestamp": [T0 + timedelta(minutes=i) for i in range(n)],
        "venue": ["binance", "kraken"] * (n // 2),
        "market": ["BTC-USD", "ETH-USD", "SOL-USD", "BTC-USD"] * (n // 4),
        "side": ["buy", "sell"] * (n // 2),
        "order_type": ["limit"] * n,
        "price": [100.0 + i for i in range(n)],
        "size": [1.0] * n,
        "status": ["new"] * n,
        "client_order_id": [f"c{i}" for i in range(n)],
    })


def test_query_orders_filters_and_returns_current_state(store: agts.ExecutionStore) -> None:
    assert store.store_orders(_orders_frame(8)) == 8
    store.update_order_status(uuid.UUID(int=1000), "cancelled", T0 + timedelta(hours=1))
    every = store.query_orders(*DAY)
    assert every.height == 8
    assert every.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert every.schema["id"] == pl.String and every.schema["fill_count"] == pl.Int64
    assert every["timestamp"].is_sorted()
    btc = store.query_orders(*DAY, agts.OrderFilters(market="BTC-USD", venue="binance"))
    assert btc["client_order_id"].to_list() == ["c0", "c4"]
    cancelled = store.query_orders(*DAY, agts.OrderFilters(status=["cancelled", "rejected"]))
    assert cancelled["id"].to_list() == [str(uuid.UUID(int=1000))]
    window = store.query_orders(T0 + timedelta(minutes=2), T0 + timedelta(minutes=4))
    assert window["client_order_id"].to_list() == ["c2", "c3"]  # end is exclusive
    naive = store.query_orders(T0.replace(tzinfo=None), (T0 + timedelta(minutes=1)).replace(
        tzinfo=None))
    assert naive["client_order_id"].to_list() == ["c0"]  # naive timestamps are UTC
    with pytest.raises(agts.ValidationError, match="end must not be before start"):
        store.query_orders(T0, T0 - timedelta(seconds=1))
    with pytest.raises(agts.ValidationError, match="filter side must be a string"):
        store.query_orders(*DAY, agts.OrderFilters(side=[]))


def test_query_fills_positions_risk_and_quotes(placed: agts.ExecutionStore) -> None:
    store = placed
    store.store_fill(_fill())
    store.store_position_snapshot(_snapshot())
    store.store_risk_decision(_decision())
    store.store_quotes(pl.DataFrame({"timestamp": [T0, T0], "venue": ["a", "b"],
                                     "market": ["BTC-USD"] * 2, "bid": [99.0, 98.0],
                                     "ask": [101.0, 100.0]}))
    fills = store.query_fills(*DAY, market="BTC-USD")
    assert fills.row(0, named=True) == {
        "id": str(uuid.UUID(int=101)), "timestamp": T0 + timedelta(seconds=1),
        "order_id": str(uuid.UUID(int=1)), "venue": "binance", "market": "BTC-USD",
        "side": "buy", "price": 60_000.0, "size": 0.2, "fee": 2.4, "fee_currency": "USD"}
    assert store.query_fills(*DAY, order_id=uuid.UUID(int=2)).height == 0
    positions = store.query_positions("BTC-USD", *DAY)
    assert positions.columns == ["timestamp", "market", "size", "avg_entry_price",
                                 "unrealized_pnl", "realized_pnl"]
    assert positions["size"].to_list() == [0.2]
    risk = store.query_risk_decisions(*DAY, decision="allow")
    assert risk["details"].str.json_decode().struct.field("limit").to_list() == [1.0]
    assert store.query_risk_decisions(*DAY, policy="other").height == 0
    quotes = store.query_quotes("BTC-USD", *DAY)
    assert quotes["mid"].to_list() == [100.0, 99.0]
    assert store.query_quotes("BTC-USD", *DAY, venue="b")["bid"].to_list() == [98.0]


def test_frames_from_queries_round_trip_and_arrow_input(placed: agts.ExecutionStore) -> None:
    fills = pl.DataFrame([_fill(id=uuid.UUID(int=500 + i), size=0.1) for i in range(3)])
    fills = fills.with_columns(pl.col("id", "order_id").map_elements(str, pl.String))
    assert placed.store_fills(fills.to_arrow()) == 3
    back = placed.query_fills(*DAY)
    assert placed.store_fills(back) == 0  # a queried frame is stored as is, idempotently


def test_naive_timestamps_are_utc_and_aware_ones_are_converted(
        store: agts.ExecutionStore) -> None:
    plus2 = timezone(timedelta(hours=2))
    store.store_position_snapshots([
        _snapshot(timestamp=datetime(2024, 3, 1, 12, 0, 0, 123456)),           # naive = UTC
        _snapshot(timestamp=datetime(2024, 3, 1, 15, 0, tzinfo=plus2)),         # 13:00 UTC
    ])
    got = store.query_positions("BTC-USD", *DAY)["timestamp"].to_list()
    assert got == [datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
                   datetime(2024, 3, 1, 13, tzinfo=UTC)]
