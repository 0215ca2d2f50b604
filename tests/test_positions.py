"""Position and PnL arithmetic of agts.positions against hand-computed cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts
from agts import positions

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _fills(rows: list[tuple]) -> pl.DataFrame:
    """rows: (seconds, market, side, price, size, fee)."""
    return pl.DataFrame(
        [(_t(s), m, side, p, q, f, "USD") for s, m, side, p, q, f in rows],
        schema={"timestamp": pl.Datetime("us", "UTC"), "market": pl.String, "side": pl.String,
                "price": pl.Float64, "size": pl.Float64, "fee": pl.Float64,
                "fee_currency": pl.String},
        orient="row",
    )


FLIP = _fills([
    (1, "A", "buy", 100.0, 1.0, 0.10),   # flat -> long 1 @ 100
    (2, "A", "buy", 110.0, 1.0, 0.11),   # long 2 @ 105
    (3, "A", "sell", 120.0, 3.0, 0.36),  # close 2 (+30), flip short 1 @ 120
    (4, "A", "buy", 90.0, 1.0, 0.09),    # close short 1 (+30) -> flat
])


@pytest.mark.parametrize("method", ["average", "fifo"])
def test_flat_long_flip_short_flat(method: positions.Method) -> None:
    out = positions.from_fills(FLIP, method=method)
    assert out.columns == ["timestamp", "market", "fill_id", "side", "fill_price", "fill_size",
                           "fee", "size", "avg_entry_price", "realized_pnl", "fees"]
    assert out["size"].to_list() == [1.0, 2.0, -1.0, 0.0]
    assert out["avg_entry_price"].to_list() == [100.0, 105.0, 120.0, None]
    assert out["realized_pnl"].to_list() == [0.0, 0.0, 30.0, 60.0]
    assert out["fees"].to_list() == pytest.approx([0.10, 0.21, 0.57, 0.66])
    assert out.schema["timestamp"] == pl.Datetime("us", "UTC")


def test_fifo_and_average_differ_on_a_partial_reduction() -> None:
    fills = _fills([(1, "A", "buy", 100.0, 1.0, 0.0), (2, "A", "buy", 110.0, 1.0, 0.0),
                    (3, "A", "sell", 120.0, 1.0, 0.0)])
    avg = positions.from_fills(fills, method="average")
    fifo = positions.from_fills(fills, method="fifo")
    # average cost: sells at 120 against 105 -> +15, the remaining unit keeps 105
    assert avg["realized_pnl"][-1] == pytest.approx(15.0)
    assert avg["avg_entry_price"][-1] == pytest.approx(105.0)
    # FIFO: the lot bought at 100 goes first -> +20, the remaining lot is the one at 110
    assert fifo["realized_pnl"][-1] == pytest.approx(20.0)
    assert fifo["avg_entry_price"][-1] == pytest.approx(110.0)
    assert avg["size"][-1] == fifo["size"][-1] == 1.0


def test_partial_fills_reweight_the_entry_and_realize_against_it() -> None:
    fills = _fills([(1, "A", "buy", 100.0, 0.5, 0.02), (2, "A", "buy", 104.0, 0.25, 0.01),
                    (3, "A", "sell", 102.0, 0.25, 0.01), (4, "A", "sell", 99.0, 0.5, 0.02)])
    out = positions.from_fills(fills)
    entry = (0.5 * 100 + 0.25 * 104) / 0.75  # 101.333...
    assert out["avg_entry_price"].to_list()[:3] == pytest.approx([100.0, entry, entry])
    assert out["size"].to_list() == pytest.approx([0.5, 0.75, 0.5, 0.0])
    r3 = 0.25 * (102 - entry)
    r4 = r3 + 0.5 * (99 - entry)
    assert out["realized_pnl"].to_list() == pytest.approx([0.0, 0.0, r3, r4])
    assert out["fees"][-1] == pytest.approx(0.06)


def test_several_markets_are_independent_and_sorted_by_market_then_time() -> None:
    fills = _fills([(1, "B", "sell", 50.0, 2.0, 0.0), (2, "A", "buy", 100.0, 1.0, 0.5),
                    (3, "B", "buy", 40.0, 1.0, 0.0), (4, "A", "sell", 105.0, 1.0, 0.5)])
    out = positions.from_fills(fills)
    assert out["market"].to_list() == ["A", "A", "B", "B"]
    assert out["size"].to_list() == [1.0, 0.0, -2.0, -1.0]
    assert out["realized_pnl"].to_list() == [0.0, 5.0, 0.0, 10.0]  # short 2 @ 50, cover 1 @ 40
    assert out["fees"].to_list() == [0.5, 1.0, 0.0, 0.0]


def test_marks_give_unrealized_pnl_via_as_of_join() -> None:
    marks = pl.DataFrame({
        "timestamp": [_t(0), _t(1.5), _t(2.5), _t(3.5)], "market": ["A"] * 4,
        "mid": [99.0, 104.0, 115.0, 118.0],
    })
    out = positions.from_fills(FLIP, marks=marks)
    assert out["mark_price"].to_list() == [99.0, 104.0, 115.0, 118.0]
    # long 1 @ 100 marked 99; long 2 @ 105 marked 104; short 1 @ 120 marked 115; flat
    assert out["unrealized_pnl"].to_list() == pytest.approx([-1.0, -2.0, 5.0, 0.0])
    net = [0 - 1 - 0.10, 0 - 2 - 0.21, 30 + 5 - 0.57, 60 + 0 - 0.66]
    assert out["net_pnl"].to_list() == pytest.approx(net)

    curve = positions.mark_to_market(out, marks)
    assert curve.columns == ["timestamp", "market", "mark_price", "size", "avg_entry_price",
                             "realized_pnl", "fees", "unrealized_pnl", "net_pnl"]
    assert curve["size"].to_list() == [0.0, 1.0, 2.0, -1.0]  # flat before the first fill
    assert curve["unrealized_pnl"].to_list() == pytest.approx([0.0, 4.0, 20.0, 2.0])
    assert curve["net_pnl"][0] == 0.0


def test_reconcile_finds_a_planted_discrepancy() -> None:
    derived = positions.from_fills(FLIP)
    snapshots = derived.select("timestamp", "market", "size", "avg_entry_price",
                               "realized_pnl").with_columns(
        pl.col("avg_entry_price").fill_null(0.0))
    assert positions.reconcile(snapshots, derived).height == 0
    planted = snapshots.with_columns(
        pl.when(pl.col("timestamp") == _t(3)).then(-1.5).otherwise(pl.col("size")).alias("size"))
    diff = positions.reconcile(planted, derived)
    assert_frame_equal(diff, pl.DataFrame({
        "timestamp": [_t(3)], "market": ["A"], "field": ["size"], "snapshot": [-1.5],
        "derived": [-1.0], "difference": [-0.5],
    }, schema_overrides={"timestamp": pl.Datetime("us", "UTC")}))


def test_reconcile_compares_as_of_the_snapshot_time_and_net_of_fees() -> None:
    derived = positions.from_fills(FLIP)
    snapshots = pl.DataFrame({
        "timestamp": [_t(0), _t(2.5)], "market": ["A", "A"], "size": [0.0, 2.0],
        "avg_entry_price": [0.0, 105.0], "realized_pnl": [0.0, -0.21],
    })
    assert positions.reconcile(snapshots, derived, net_of_fees=True).height == 0
    gross = positions.reconcile(snapshots, derived)
    assert gross["field"].to_list() == ["realized_pnl"]
    assert gross["difference"][0] == pytest.approx(-0.21)


@pytest.mark.parametrize(("call", "message"), [
    pytest.param(lambda: positions.from_fills(FLIP, method="lifo"),  # type: ignore[arg-type]
                 "method must be one of", id="method"),
    pytest.param(lambda: positions.from_fills(FLIP.drop("price")), r"lack column\(s\) \['price'\]",
                 id="missing-column"),
    pytest.param(lambda: positions.from_fills(FLIP.with_columns(side=pl.lit("long"))),
                 "side must be 'buy' or 'sell', got 'long'", id="side"),
    pytest.param(lambda: positions.from_fills(FLIP.with_columns(
        fee_currency=pl.Series(["USD", "BNB", "USD", "USD"]))),
                 r"market 'A' has fees in several currencies \['BNB', 'USD'\]", id="fee-currency"),
    pytest.param(lambda: positions.from_fills(FLIP, marks=pl.DataFrame({"timestamp": [T0],
                                                                        "market": ["A"]})),
                 "marks need a price column", id="marks-price"),
    pytest.param(lambda: positions.reconcile(FLIP, positions.from_fills(FLIP), fields=("fee",)),
                 "fields must be among", id="reconcile-fields"),
])
def test_bad_arguments_are_refused(call: object, message: str) -> None:
    with pytest.raises(agts.ValidationError, match=message):
        call()  # type: ignore[operator]
