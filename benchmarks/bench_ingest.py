"""Metrics ingest benchmark: agts against its peers, side by side (not a test).

Generates realistic bot metrics (6 metric names, 2-4 labels per series, points of all series
interleaved as they arrive from a monitor) and writes them into ``agts.metric_points`` (the same
table, the same unique (series_id, time) index) of a scratch database, emptied before each method:

- agts ``insert_metrics_batch`` from a Polars frame with a struct labels column (validation, series
  registration, sorting, idempotency ledger: all included);
- agts pipeline (``engine.ingestor``): frames of 20k points put into the buffer, batches of
  ``--batch-size`` written with their ledger rows;
- psycopg ``executemany`` and pandas ``to_sql(method="multi")`` on a sample, extrapolated;
- psycopg ``COPY ... write_row`` row by row (sample);
- the server alone: ``COPY FROM`` a CSV file of the already-normalized rows (series ids resolved),
  in arrival order and sorted by (series_id, time).

The peers get rows with series ids already resolved (their labels work is not counted), so they are
measured at their best. Usage::

    .venv/bin/python benchmarks/bench_ingest.py [--points 2000000] [--series 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.ingest._normalize import normalize

NAMES = ["order_latency_ms", "fill_rate", "pnl_usd", "queue_depth", "mid_price", "spread_bps"]
VENUES = ["binance", "coinbase", "kraken", "okx", "bybit"]
LABELS = pl.Struct({"venue": pl.String, "market": pl.String, "strategy": pl.String,
                    "host": pl.String})
DB = "agts_bench_ingest"


def generate(points: int, series: int, seed: int = 7) -> pl.DataFrame:
    """``points`` metric points over ``series`` series, interleaved, 1 s apart per series."""
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(series):
        labels.append({"venue": VENUES[i % 5], "market": f"M{i // 30:03d}-USDT",
                       "strategy": f"s{i % 7}" if i % 3 else None,
                       "host": f"h{i % 11}" if i % 4 == 0 else None})
    per = -(-points // series)
    sid = np.repeat(np.arange(series), per)[:points]
    step = np.tile(np.arange(per), series)[:points]
    order = rng.permutation(points)
    sid, step = sid[order], step[order]
    start = np.datetime64("2026-01-05T00:00:00", "us")
    return pl.DataFrame({
        "timestamp": pl.Series(start + step * np.timedelta64(1_000_000, "us")).dt.replace_time_zone(
            "UTC"),
        "metric_name": pl.Series([NAMES[i % len(NAMES)] for i in range(series)])[sid],
        "value": rng.normal(100.0, 10.0, points),
        "labels": pl.Series(labels, dtype=LABELS)[sid],
    })


def admin_conninfo(config: StorageConfig) -> str:
    return config.with_overrides(database={"database": "postgres"}).database.conninfo()


def reset(engine: agts.StorageEngine) -> None:
    with engine.db.connection() as conn:
        conn.execute("TRUNCATE agts.metric_points, agts.ingest_batches")
        conn.commit()
        conn.execute("CHECKPOINT")


def timed(engine: agts.StorageEngine, fn: Callable[[], int]) -> tuple[int, float]:
    reset(engine)
    started = time.perf_counter()
    n = fn()
    elapsed = time.perf_counter() - started
    with engine.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()
    assert row is not None and row[0] == n, f"stored {row} points, expected {n}"
    return n, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100_000,
                        help="pipeline batch size (points per transaction)")
    parser.add_argument("--sample", type=int, default=20_000,
                        help="points for executemany and to_sql (extrapolated)")
    parser.add_argument("--copy-sample", type=int, default=300_000,
                        help="points for psycopg COPY write_row (extrapolated)")
    parser.add_argument("--skip-slow", action="store_true", help="skip executemany and to_sql")
    args = parser.parse_args(argv)

    base = StorageConfig.load()
    with psycopg.connect(admin_conninfo(base), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    config = base.with_overrides(database={"database": DB})
    try:
        with agts.connect(config, migrate=True) as engine:
            run(engine, config, args)
    finally:
        with psycopg.connect(admin_conninfo(base), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(DB)))
    return 0


def run(engine: agts.StorageEngine, config: StorageConfig, args: argparse.Namespace) -> None:
    t = time.perf_counter()
    frame = generate(args.points, args.series)
    print(f"generated {frame.height:,} points, {args.series:,} series, "
          f"{frame['metric_name'].n_unique()} metric names, 2-4 labels "
          f"in {time.perf_counter() - t:.1f}s; {os.cpu_count()} cores (shared machine)")
    results: list[tuple[str, int, float, bool]] = []

    # Normalized rows for the peers (series ids resolved outside the timing).
    engine.insert_metrics_batch(frame.head(args.series * 2))
    batch = normalize(frame)
    ids, _ = engine._metrics_writer().series_ids(batch.series)
    rows = pl.DataFrame({"time": batch.points["time"],
                         "series_id": pl.Series(ids).gather(batch.points["key"]),
                         "value": batch.points["value"]})

    n, s = timed(engine, lambda: engine.insert_metrics_batch(frame).rows_written)
    results.append(("agts insert_metrics_batch (polars, labels)", n, s, False))

    def pipeline() -> int:
        with engine.ingestor(batch_size=args.batch_size, max_buffer_size=4 * args.batch_size,
                             flush_interval_ms=1000, spool_dir=Path(tempfile.mkdtemp())) as ing:
            for offset in range(0, frame.height, 20_000):
                ing.put(frame.slice(offset, 20_000))
        return ing.stats().points_written
    n, s = timed(engine, pipeline)
    results.append((f"agts pipeline, idempotent (batches of {args.batch_size:,})", n, s, False))

    tuples_sql = "INSERT INTO agts.metric_points (time, series_id, value) VALUES (%s, %s, %s)"
    if not args.skip_slow:
        sample = rows.head(args.sample)

        def executemany() -> int:
            with engine.db.connection() as conn, conn.cursor() as cur:
                cur.executemany(tuples_sql, sample.rows())
            return sample.height
        n, s = timed(engine, executemany)
        results.append(("psycopg executemany (sample, extrapolated)", n, s, True))

        def to_sql() -> int:
            import sqlalchemy

            url = sqlalchemy.engine.URL.create(
                "postgresql+psycopg", username=config.database.user,
                password=config.database.resolved_password(), host=config.database.host,
                port=config.database.port, database=DB)
            eng = sqlalchemy.create_engine(url)
            try:
                sample.to_pandas().to_sql("metric_points", eng, schema="agts", if_exists="append",
                                          index=False, method="multi", chunksize=1000)
            finally:
                eng.dispose()
            return sample.height
        try:
            n, s = timed(engine, to_sql)
            results.append(("pandas to_sql method=multi (sample, extrapolated)", n, s, True))
        except ImportError:
            print("pandas to_sql skipped: SQLAlchemy is not installed")

    copy_sample = rows.head(args.copy_sample)

    def copy_rows() -> int:
        with engine.db.connection() as conn, conn.cursor() as cur, cur.copy(
            "COPY agts.metric_points (time, series_id, value) FROM STDIN"
        ) as copy:
            for row in copy_sample.iter_rows():
                copy.write_row(row)
        return copy_sample.height
    n, s = timed(engine, copy_rows)
    results.append(("psycopg COPY write_row (sample, extrapolated)", n, s, True))

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        for label, data in (("arrival order", rows),
                            ("sorted by series_id, time", rows.sort("series_id", "time"))):
            path = Path(tmp) / "points.csv"
            data.with_columns(pl.col("time").dt.to_string("%Y-%m-%d %H:%M:%S%.6f+00")).write_csv(
                path, include_header=False)
            os.chmod(path, 0o644)

            def server_copy(path: Path = path) -> int:
                with engine.db.connection() as conn:
                    conn.execute(sql.SQL("COPY agts.metric_points (time, series_id, value) "
                                         "FROM {} (FORMAT csv)").format(sql.Literal(str(path))))
                return rows.height
            n, s = timed(engine, server_copy)
            results.append((f"server COPY FROM file ({label})", n, s, False))

    report(results)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MiB")


def report(results: list[tuple[str, int, float, bool]]) -> None:
    rate = {label: n / s for label, n, s, _ in results}
    limit = max(v for k, v in rate.items() if k.startswith("server COPY"))
    batch = rate["agts insert_metrics_batch (polars, labels)"]
    print()
    print(f"{'method':<58} {'points':>10} {'seconds':>8} {'points/s':>11} "
          f"{'vs server':>9} {'vs agts':>8}")
    for label, n, s, _ in results:
        print(f"{label:<58} {n:>10,} {s:>8.2f} {rate[label]:>11,.0f} "
              f"{rate[label] / limit:>9.2f} {rate[label] / batch:>8.3f}")
    print("\n'vs server' = / best server-side COPY FROM file; 'vs agts' = / agts "
          "insert_metrics_batch; sampled methods are extrapolated from their sample.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
