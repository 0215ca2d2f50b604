"""Execution history: bulk fills through ExecutionStore vs psycopg executemany, and positions.

Runs on a scratch database (created and dropped here) of the server of ``$AGTS_TEST_DSN`` or the
local default cluster. Prints rows/s side by side and as ratios; not a pass/fail test.

    .venv/bin/python benchmarks/bench_execution.py [--fills 100000] [--sample 5000]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

import agts
from agts import positions
from agts.db import conninfo


def _config(name: str) -> agts.StorageConfig:
    dsn = os.environ.get("AGTS_TEST_DSN")
    base = agts.StorageConfig.from_dsn(dsn) if dsn else agts.StorageConfig.load(env={})
    if base.database.dsn:
        return base.with_overrides(database={
            "dsn": psycopg.conninfo.make_conninfo(base.database.dsn, dbname=name),
            "database": name})
    return base.with_overrides(database={"database": name})


def _admin(cfg: agts.StorageConfig) -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(conninfo(cfg.database),
                                                          dbname="postgres"), autocommit=True)


def _frames(n_orders: int, n_fills: int, seed: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    markets = np.array(["BTC-USD", "ETH-USD", "SOL-USD"])
    sides = np.array(["buy", "sell"])
    o_market = markets[rng.integers(0, 3, n_orders)]
    o_side = sides[rng.integers(0, 2, n_orders)]
    o_ids = [str(uuid.UUID(int=int(x))) for x in rng.integers(1, 2**62, n_orders)]
    orders = pl.DataFrame({
        "id": o_ids,
        "timestamp": [start + timedelta(seconds=10 * i) for i in range(n_orders)],
        "venue": "binance", "market": o_market, "side": o_side, "order_type": "market",
        "price": None, "size": 1_000.0, "status": "new",
        "client_order_id": [f"bench-{i}" for i in range(n_orders)],
    }, schema_overrides={"price": pl.Float64})
    pick = rng.integers(0, n_orders, n_fills)
    fills = pl.DataFrame({
        "id": [str(uuid.uuid4()) for _ in range(n_fills)],
        "order_id": [o_ids[i] for i in pick],
        "venue": "binance", "market": o_market[pick], "side": o_side[pick],
        "price": rng.uniform(90, 110, n_fills), "size": rng.uniform(0.01, 1.0, n_fills),
        "fee": rng.uniform(0, 0.05, n_fills), "fee_currency": "USD",
    }).with_columns(timestamp=pl.Series(  # after its order (placed every 10 s), within a week
        int(start.timestamp()) * 1_000_000 + pick * 10_000_000
        + rng.integers(0, 7 * 86_400_000_000, n_fills)
    ).cast(pl.Datetime("us", "UTC")))
    return orders, fills


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--sample", type=int, default=5_000, help="rows for executemany")
    parser.add_argument("--orders", type=int, default=2_000)
    args = parser.parse_args()

    name = f"agts_bench_exec_{os.getpid()}"
    cfg = _config(name)
    with _admin(cfg) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        orders, fills = _frames(args.orders, args.fills)
        with agts.connect(cfg, migrate=True) as engine:
            store = agts.ExecutionStore(engine)
            store.store_orders(orders)
            sample = fills.tail(args.sample)
            bulk = fills.head(fills.height - args.sample)

            t = time.perf_counter()
            new = store.store_fills(bulk)
            t_bulk = time.perf_counter() - t
            assert new == bulk.height

            t = time.perf_counter()
            again = store.store_fills(bulk)
            t_again = time.perf_counter() - t
            assert again == 0

            rows = sample.select("id", "timestamp", "order_id", "venue", "market", "side",
                                 "price", "size", "fee", "fee_currency").rows()
            t = time.perf_counter()
            with engine.db.connection() as conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO agts.fills (id, timestamp, order_id, venue, market, side, price, "
                    "size, fee, fee_currency) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (id, timestamp) DO NOTHING", rows)
            t_many = time.perf_counter() - t

            t = time.perf_counter()
            one = sample.head(1).with_columns(id=pl.lit(str(uuid.uuid4())))
            for _ in range(20):
                store.store_fills(one)
            t_single = (time.perf_counter() - t) / 20

            t = time.perf_counter()
            queried = store.query_fills(datetime(2023, 1, 1, tzinfo=UTC),
                                        datetime(2025, 1, 1, tzinfo=UTC))
            t_query = time.perf_counter() - t

        t = time.perf_counter()
        derived = positions.from_fills(queried, method="average")
        t_avg = time.perf_counter() - t
        t = time.perf_counter()
        positions.from_fills(queried, method="fifo")
        t_fifo = time.perf_counter() - t

        print(f"fills: {bulk.height:,} bulk, {sample.height:,} executemany sample, "
              f"{args.orders:,} orders, {engine.server.edition} edition")
        print(f"  ExecutionStore.store_fills (ADBC staging, checks) {_rate(bulk.height, t_bulk)}"
              f"  ({t_bulk:.2f} s)")
        print(f"  same frame again (idempotent no-op)              {_rate(bulk.height, t_again)}")
        print(f"  psycopg executemany INSERT ... ON CONFLICT      {_rate(sample.height, t_many)}")
        print(f"  ratio bulk / executemany                        "
              f"{(bulk.height / t_bulk) / (sample.height / t_many):>12.1f}x")
        print(f"  one-fill store_fill latency                     {t_single * 1000:>11.1f} ms")
        print(f"  query_fills -> polars ({queried.height:,} rows)      "
              f"{_rate(queried.height, t_query)}")
        print(f"  positions.from_fills average / fifo             {_rate(derived.height, t_avg)}"
              f" / {_rate(derived.height, t_fifo)}")
    finally:
        with _admin(cfg) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))


if __name__ == "__main__":
    main()
