"""One set of argument rules for every public function (agts._args): the same time forms are
accepted everywhere, and every argument mistake is a ValidationError naming the argument."""

from __future__ import annotations

import datetime as dt
import math
import re
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import agts

T0 = dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)

#: The forms of 2026-01-02 00:00 UTC (and, for the end, 2026-01-03) every time argument takes.
DAY_START = [
    pytest.param(dt.datetime(2026, 1, 2, tzinfo=dt.UTC), id="aware-datetime"),
    pytest.param(dt.datetime(2026, 1, 2), id="naive-datetime-is-utc"),
    pytest.param(dt.datetime(2026, 1, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))),
                 id="other-offset"),
    pytest.param(dt.date(2026, 1, 2), id="date"),
    pytest.param("2026-01-02", id="iso-date"),
    pytest.param("2026-01-02T00:00:00Z", id="iso-z"),
    pytest.param("2026-01-02T02:00:00+02:00", id="iso-offset"),
    pytest.param(np.datetime64("2026-01-02T00:00:00"), id="numpy-datetime64"),
    pytest.param(pd.Timestamp("2026-01-02", tz="UTC"), id="pandas-timestamp"),
]


@pytest.fixture
def stored(engine: agts.StorageEngine) -> agts.ExecutionStore:
    """One point, one order with a fill, a position snapshot, a risk decision and a quote, all at
    2026-01-02 10:00 UTC."""
    engine.insert_metrics_batch([agts.MetricPoint(T0, "lat", 1.0, {"venue": "v"})])
    store = agts.ExecutionStore(engine)
    order_id = uuid.UUID(int=1)
    store.store_order(agts.Order(order_id, "2026-01-02T10:00:00Z", "v", "BTC-USD", "buy",
                                 "market", None, 1.0, "new", "arg-1"))
    store.store_fill(agts.Fill(uuid.UUID(int=2), np.datetime64("2026-01-02T10:00:01"), order_id,
                               "v", "BTC-USD", "buy", 100.0, 0.5, 0.01, "USD"))
    store.store_position_snapshot(agts.PositionSnapshot(pd.Timestamp("2026-01-02 10:00", tz="UTC"),
                                                        "BTC-USD", 0.5, 100.0, 0.0, 0.0))
    store.store_position_snapshot(agts.PositionSnapshot(dt.date(2025, 12, 31), "ETH-USD", 1.0,
                                                        10.0, 0.0, 0.0))
    store.store_risk_decision(agts.RiskDecision(uuid.UUID(int=3), T0, "p", "allow", None,
                                                {"limit": 1}, "BTC-USD", order_id))
    store.store_quotes(pl.DataFrame({"timestamp": ["2026-01-02T10:00:00+00:00"], "venue": ["v"],
                                     "market": ["BTC-USD"], "bid": [99.0], "ask": [101.0]}))
    update = store.update_order_status(order_id, "partially_filled", "2026-01-02T10:00:01Z")
    assert update
    return store


def _calls(engine: agts.StorageEngine, store: agts.ExecutionStore,
           ) -> dict[str, Callable[[Any, Any], int]]:
    """Every public query taking a time range, as ``f(start, end) -> rows``."""
    return {
        "query_metrics": lambda s, e: engine.query_metrics("lat", s, e).height,
        "query_aggregated": lambda s, e: int(
            engine.query_aggregated("lat", s, e, "1h", "count")["count"].sum()),
        "query_metrics_multi": lambda s, e: engine.query_metrics_multi(["lat"], s, e).height,
        "query_cold": lambda s, e: engine.query_cold("metrics", s, e).height + 1,
        "query_orders": lambda s, e: store.query_orders(s, e).height,
        "query_fills": lambda s, e: store.query_fills(s, e).height,
        "query_positions": lambda s, e: store.query_positions("BTC-USD", s, e).height,
        "query_risk_decisions": lambda s, e: store.query_risk_decisions(s, e).height,
        "query_quotes": lambda s, e: store.query_quotes("BTC-USD", s, e).height,
    }


@pytest.mark.parametrize("start", DAY_START)
def test_every_time_argument_takes_the_same_forms(engine: agts.StorageEngine,
                                                  stored: agts.ExecutionStore, start: Any) -> None:
    end = "2026-01-03"
    for name, call in _calls(engine, stored).items():
        assert call(start, end) == 1, name
        assert call(start, "2026-01-02T09:00:00Z") == (1 if name == "query_cold" else 0), name


@pytest.mark.parametrize(("value", "shown"), [
    pytest.param("yesterday", "'yesterday'", id="text"),
    pytest.param(12, "int 12", id="number"),
    pytest.param(None, "NoneType None", id="none"),
    pytest.param(np.datetime64("NaT"), "numpy.datetime64('NaT')", id="numpy-nat"),
    pytest.param(pd.NaT, "NaTType NaT", id="pandas-nat"),
])
def test_a_bad_time_gets_one_message_everywhere(engine: agts.StorageEngine,
                                                stored: agts.ExecutionStore, value: Any,
                                                shown: str) -> None:
    for name, call in _calls(engine, stored).items():
        with pytest.raises(agts.ValidationError, match=re.escape(
                "start must be a datetime, a date, an ISO 8601 string or a numpy.datetime64, got "
                + shown)) as info:
            call(value, "2026-01-03")
        assert info.value.column == "start", name


def test_records_take_every_time_form(engine: agts.StorageEngine,
                                      stored: agts.ExecutionStore) -> None:
    orders = stored.query_orders("2026-01-02", "2026-01-03")
    assert orders.get_column("timestamp").to_list() == [T0]
    fills = stored.query_fills(dt.date(2026, 1, 2), dt.date(2026, 1, 3))
    assert fills.get_column("timestamp").to_list() == [T0 + dt.timedelta(seconds=1)]
    assert stored.query_positions("ETH-USD", "2025-12-31", "2026-01-03").get_column(
        "timestamp").to_list() == [dt.datetime(2025, 12, 31, tzinfo=dt.UTC)]


@pytest.mark.parametrize(("call", "message"), [
    pytest.param(lambda e, s: e.insert_metrics_batch(pa.Table.from_arrays(
        [pa.array([T0]), pa.array(["m"]), pa.array([1.0]), pa.array([2.0])],
        names=["timestamp", "metric_name", "value", "value"])),
        r"metric points has the column\(s\) \['value'\] more than once", id="duplicate-columns"),
    pytest.param(lambda e, s: e.insert_metrics_batch(pd.DataFrame(
        [[T0, "m", 1.0, 2.0]], columns=["timestamp", "metric_name", "value", "value"])),
        r"metric points has the column\(s\) \['value'\] more than once",
        id="duplicate-pandas-columns"),
    pytest.param(lambda e, s: s.store_fills(pa.Table.from_arrays(
        [pa.array(["a"]), pa.array(["b"])], names=["id", "id"])),
        r"fill data has the column\(s\) \['id'\] more than once", id="duplicate-fill-columns"),
    pytest.param(lambda e, s: s.store_risk_decision(agts.RiskDecision(
        uuid.uuid4(), T0, "p", "allow", None, {"x": object()}, None, None)),
        "details must be JSON", id="details-not-json"),
    pytest.param(lambda e, s: s.store_risk_decision(agts.RiskDecision(
        uuid.uuid4(), T0, "p", "allow", None, {"x": math.nan}, None, None)),
        "details must be JSON .*got {'x': nan}", id="details-nan"),
    pytest.param(lambda e, s: s.store_risk_decisions(pl.DataFrame({
        "id": [str(uuid.uuid4())], "timestamp": [T0], "policy": ["p"], "decision": ["allow"],
        "details": ['{"a": NaN}']})), "column 'details' row 0: not JSON", id="details-text-nan"),
    pytest.param(lambda e, s: s.store_order(agts.Order(
        uuid.uuid4(), T0, "bin\x00ance", "m", "buy", "market", None, 1.0, "new", "c")),
        "order column 'venue' row 0: contains a NUL character", id="nul-in-venue"),
    pytest.param(lambda e, s: e.query_cold("metrics", T0, T0, metric_name="a\x00b"),
                 "metric_name must be a non-empty string without NUL", id="nul-in-cold-metric"),
    pytest.param(lambda e, s: e.query_cold("fil\x00ls", T0, T0), "table must be a table name",
                 id="nul-in-table"),
    pytest.param(lambda e, s: e.query_cold("nonsense", T0, T0), "table must be one of",
                 id="unknown-table"),
    pytest.param(lambda e, s: e.ingestor(on_error="bogus"), "on_error must be one of",
                 id="ingestor-on-error"),
    pytest.param(lambda e, s: e.archive("metrics", T0, T0 - dt.timedelta(1), root="/tmp/x"),
                 "end must be after start", id="archive-reversed"),
    pytest.param(lambda e, s: e.archive("metrics", row_group_rows=0, root="/tmp/x"),
                 "row_group_rows must be a positive integer, got 0", id="archive-row-groups"),
    pytest.param(lambda e, s: e.storage_report(by="month"), "by must be one of", id="report-by"),
    pytest.param(lambda e, s: e.query_metrics("lat", T0, T0, tiers="warm"),
                 r"tiers must be one of \('hot', 'cold', 'all'\), got 'warm'", id="tiers"),
    pytest.param(lambda e, s: s.query_fills(T0, T0, tiers=["hot"]),
                 r"tiers must be one of \('hot', 'cold', 'all'\), got \['hot'\]",
                 id="tiers-list"),
    pytest.param(lambda e, s: agts.connect(42), "connect.. takes a DSN string", id="connect-type"),
    pytest.param(lambda e, s: agts.temporary_database(prefix="Bad-Name"),
                 "must be 1-63 lower-case letters", id="temporary-prefix"),
])
def test_argument_mistakes_are_validation_errors(engine: agts.StorageEngine, call: Any,
                                                 message: str) -> None:
    store = agts.ExecutionStore(engine)
    with pytest.raises(agts.ValidationError, match=message):
        call(engine, store)
    with engine.db.connection() as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM agts.metric_points) + "
                            "(SELECT count(*) FROM agts.orders) + "
                            "(SELECT count(*) FROM agts.risk_decisions)").fetchone() == (0,)
