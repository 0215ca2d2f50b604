"""A realistic, deterministic day of a trading bot, as Polars frames: for demos, notebooks, tests.

:func:`trading_day` builds mid prices (a random walk per market), quotes, monitor metrics
(latency, fill rate, queue depth, PnL, prices) with labels, orders with lifecycles, their fills and
the risk decisions taken before each order. The same ``seed`` always gives the same frames.

Examples
--------
>>> day = trading_day(seed=7, points=50_000)
>>> day.metrics.columns
['timestamp', 'metric_name', 'value', 'labels']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

__all__ = ["SampleDay", "trading_day"]

VENUES = ("binance", "coinbase", "kraken")
MARKETS = {"BTC-USD": 60_000.0, "ETH-USD": 3_000.0, "SOL-USD": 150.0}
_SIZE = {"BTC-USD": 0.05, "ETH-USD": 0.8, "SOL-USD": 15.0}
_FEE_RATE = 0.0004  # taker fee, in quote currency (USD)


@dataclass(frozen=True)
class SampleDay:
    """The frames of one generated day (all timestamps UTC, microsecond precision).

    ``metrics.labels`` is JSON text (label sets differ between metrics, so one struct type cannot
    hold them all); ``insert_metrics_batch`` takes it as is.
    """

    start: datetime
    metrics: pl.DataFrame
    quotes: pl.DataFrame
    orders: pl.DataFrame
    order_events: pl.DataFrame
    fills: pl.DataFrame
    risk_decisions: pl.DataFrame

    def marks(self) -> pl.DataFrame:
        """Mid price per market and timestamp (venue-averaged), for marking positions."""
        return (
            self.quotes.group_by("timestamp", "market")
            .agg(pl.col("mid").mean().alias("price"))
            .sort("market", "timestamp")
        )


def trading_day(
    *,
    seed: int = 0,
    points: int = 200_000,
    orders: int = 2_000,
    start: datetime | None = None,
    hours: int = 24,
) -> SampleDay:
    """Generate one day of a trading bot's data.

    Parameters
    ----------
    seed
        Seed of the random generator; the same seed gives identical frames.
    points
        Number of metric points, spread over the series (±1%).
    orders
        Number of orders placed over the day.
    start
        First timestamp (UTC). Default: midnight UTC of 3 days ago.
    hours
        Length of the generated period.
    """
    if points <= 0 or orders <= 0 or hours <= 0:
        raise ValueError(
            f"points, orders and hours must be positive, got {points!r}, {orders!r}, {hours!r}"
        )
    rng = np.random.default_rng(seed)
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=3)
    if start.tzinfo is None:
        raise ValueError(f"start must be timezone-aware, got {start!r}")
    seconds = hours * 3600
    mids = _mid_prices(rng, seconds)
    quotes = _quotes(rng, start, mids, seconds)
    metrics = _metrics(rng, start, mids, seconds, points)
    orders_df, events, fills = _orders(rng, start, mids, seconds, orders)
    risk = _risk_decisions(rng, orders_df)
    return SampleDay(start, metrics, quotes, orders_df, events, fills, risk)


def _mid_prices(rng: np.random.Generator, seconds: int) -> dict[str, np.ndarray]:
    mids = {}
    for market, price in MARKETS.items():
        steps = rng.normal(0.0, 0.00012, seconds)  # ~2% daily volatility
        mids[market] = price * np.exp(np.cumsum(steps))
    return mids


def _ts(start: datetime, offsets_us: np.ndarray) -> pl.Series:
    base = int(start.timestamp() * 1_000_000)
    return pl.Series("timestamp", base + offsets_us.astype(np.int64)).cast(
        pl.Datetime("us", "UTC")
    )


def _quotes(rng: np.random.Generator, start: datetime, mids: dict[str, np.ndarray],
            seconds: int) -> pl.DataFrame:
    frames = []
    every = 10  # one quote per venue and market every 10 s
    idx = np.arange(0, seconds, every)
    for market, mid in mids.items():
        for venue in VENUES:
            m = mid[idx] * (1 + rng.normal(0, 0.00005, idx.size))
            half = m * rng.uniform(0.00005, 0.0002, idx.size)
            frames.append(pl.DataFrame({
                "timestamp": _ts(start, idx * 1_000_000),
                "venue": venue, "market": market,
                "bid": m - half, "ask": m + half, "mid": m,
            }))
    return pl.concat(frames).sort("timestamp", "venue", "market")


def _metrics(rng: np.random.Generator, start: datetime, mids: dict[str, np.ndarray], seconds: int,
             points: int) -> pl.DataFrame:
    series: list[tuple[str, dict[str, str]]] = []
    for venue in VENUES:
        for endpoint in ("place_order", "cancel_order", "market_data"):
            series.append(("latency_ms", {"venue": venue, "endpoint": endpoint}))
        for market in MARKETS:
            series.append(("fill_rate", {"venue": venue, "market": market}))
            series.append(("queue_depth", {"venue": venue, "market": market, "side": "bid"}))
            series.append(("queue_depth", {"venue": venue, "market": market, "side": "ask"}))
            series.append(("price_mid", {"venue": venue, "market": market}))
    for market in MARKETS:
        series.append(("pnl_usd", {"market": market, "strategy": "mm-1"}))
    per_series = max(1, points // len(series))
    frames = []
    for name, labels in series:
        offsets = np.sort(rng.choice(seconds * 1_000_000, size=per_series, replace=False))
        sec = np.minimum(offsets // 1_000_000, seconds - 1)
        if name == "latency_ms":
            values = rng.lognormal(mean=2.3, sigma=0.5, size=per_series)
        elif name == "fill_rate":
            values = np.clip(rng.beta(5, 3, size=per_series), 0, 1)
        elif name == "queue_depth":
            values = rng.poisson(40, size=per_series).astype(np.float64)
        elif name == "price_mid":
            values = mids[labels["market"]][sec]
        else:
            values = np.cumsum(rng.normal(0.5, 25.0, size=per_series))
        frames.append(pl.DataFrame({
            "timestamp": _ts(start, offsets),
            "metric_name": name,
            "value": values,
            "labels": json.dumps(labels, sort_keys=True),
        }))
    return pl.concat(frames).sort("timestamp")


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    hexes = [bytes(row).hex() for row in raw]
    return [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in hexes]


def _orders(rng: np.random.Generator, start: datetime, mids: dict[str, np.ndarray], seconds: int,
            n: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    markets = np.array(list(MARKETS))
    market = markets[rng.integers(0, len(markets), n)]
    venue = np.array(VENUES)[rng.integers(0, len(VENUES), n)]
    side = np.where(rng.random(n) < 0.5, "buy", "sell")
    order_type = np.where(rng.random(n) < 0.7, "limit", "market")
    offsets = np.sort(rng.choice((seconds - 120) * 1_000_000, size=n, replace=False))
    sec = offsets // 1_000_000
    mid = np.array([mids[m][s] for m, s in zip(market, sec, strict=True)])
    sign = np.where(side == "buy", -1.0, 1.0)
    price = np.where(order_type == "limit", mid * (1 + sign * rng.uniform(0, 0.0008, n)), np.nan)
    base_size = np.array([_SIZE[m] for m in market])
    size = np.round(base_size * rng.uniform(0.2, 2.0, n), 6)
    outcome = rng.choice(["filled", "partially_filled", "cancelled", "rejected"], size=n,
                         p=[0.6, 0.15, 0.17, 0.08])
    ids = _uuids(rng, n)
    orders = pl.DataFrame({
        "id": ids,
        "timestamp": _ts(start, offsets),
        "venue": venue, "market": market, "side": side, "order_type": order_type,
        "price": price, "size": size,
        "status": "new",
        "client_order_id": [f"cl-{i:07d}" for i in range(n)],
    }).with_columns(pl.col("price").fill_nan(None))

    # Fills: filled orders fill fully in 1-3 parts, partially filled ones fill 30-90%.
    fill_rows: dict[str, list] = {k: [] for k in
                                  ("order_id", "t_us", "venue", "market", "side", "price", "size")}
    event_rows: dict[str, list] = {k: [] for k in ("order_id", "t_us", "status", "filled_size")}
    for i in range(n):
        t = int(offsets[i])
        if outcome[i] == "rejected":
            event_rows["order_id"].append(ids[i])
            event_rows["t_us"].append(t + 2_000)
            event_rows["status"].append("rejected")
            event_rows["filled_size"].append(0.0)
            continue
        target = size[i] if outcome[i] == "filled" else round(size[i] * rng.uniform(0.3, 0.9), 6)
        parts = 1 if outcome[i] == "partially_filled" else int(rng.integers(1, 4))
        cuts = np.sort(rng.uniform(0, 1, parts - 1))
        shares = np.diff(np.concatenate(([0.0], cuts, [1.0])))
        sizes = np.round(shares * target, 6)
        sizes[-1] = round(target - sizes[:-1].sum(), 6)
        filled = 0.0
        t_fill = t
        for s in sizes:
            if s <= 0:
                continue
            t_fill += int(rng.integers(50_000, 20_000_000))
            px_mid = mids[market[i]][min(t_fill // 1_000_000, seconds - 1)]
            px = price[i] if order_type[i] == "limit" else px_mid * (1 - sign[i] * 0.0002)
            fill_rows["order_id"].append(ids[i])
            fill_rows["t_us"].append(t_fill)
            fill_rows["venue"].append(venue[i])
            fill_rows["market"].append(market[i])
            fill_rows["side"].append(side[i])
            fill_rows["price"].append(float(px))
            fill_rows["size"].append(float(s))
            filled = round(filled + float(s), 6)
            done = filled >= size[i] - 1e-9
            event_rows["order_id"].append(ids[i])
            event_rows["t_us"].append(t_fill)
            event_rows["status"].append("filled" if done else "partially_filled")
            event_rows["filled_size"].append(filled)
        if outcome[i] in {"cancelled", "partially_filled"}:
            event_rows["order_id"].append(ids[i])
            event_rows["t_us"].append(t_fill + int(rng.integers(1_000_000, 60_000_000)))
            event_rows["status"].append("cancelled")
            event_rows["filled_size"].append(filled)
    fills = pl.DataFrame({
        "id": _uuids(rng, len(fill_rows["order_id"])),
        "timestamp": _ts(start, np.array(fill_rows["t_us"], dtype=np.int64)),
        "order_id": fill_rows["order_id"],
        "venue": fill_rows["venue"], "market": fill_rows["market"], "side": fill_rows["side"],
        "price": fill_rows["price"], "size": fill_rows["size"],
    }).with_columns(
        fee=(pl.col("price") * pl.col("size") * _FEE_RATE),
        fee_currency=pl.lit("USD"),
    ).sort("timestamp")
    events = pl.DataFrame({
        "order_id": event_rows["order_id"],
        "timestamp": _ts(start, np.array(event_rows["t_us"], dtype=np.int64)),
        "status": event_rows["status"],
        "filled_size": event_rows["filled_size"],
    }).sort("timestamp")
    return orders, events, fills


def _risk_decisions(rng: np.random.Generator, orders: pl.DataFrame) -> pl.DataFrame:
    n = orders.height
    policies = np.array(["max_position", "max_order_notional", "rate_limit"])
    policy = policies[rng.integers(0, len(policies), n)]
    deny = rng.random(n) < 0.05
    notional = (orders["size"] * orders["price"].fill_null(0.0)).to_numpy()
    reasons = np.where(deny, "limit exceeded", "within limits")
    details = [json.dumps({"notional": round(float(v), 2), "limit": 50_000}) for v in notional]
    return pl.DataFrame({
        "id": _uuids(rng, n),
        "timestamp": orders["timestamp"] - timedelta(milliseconds=1),
        "order_id": orders["id"],
        "market": orders["market"],
        "policy": policy,
        "decision": np.where(deny, "deny", "allow"),
        "reason": reasons,
        "details": details,
    })
