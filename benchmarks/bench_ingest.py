"""Metrics ingest benchmark: agts against its peers, side by side (not a test).

Generates realistic bot metrics (6 metric names, 2-4 labels per series, one point per series and
second, arriving second by second with the series of each second in random order, as a monitor
emits them) and writes them into ``agts.metric_points`` (the same table, the same indexes) of a
scratch database, emptied before each method. The big methods run in ``--repeat`` interleaved
rounds and the median is reported (the machine is shared; single runs vary by 30 %):

- agts ``insert_metrics_batch`` from a Polars frame with a struct labels column (validation, series
  registration, sorting, idempotency ledger: all included);
- agts pipeline (``engine.ingestor``): frames of 20k points put into the buffer, batches of
  ``--batch-size`` written with their ledger rows;
- psycopg ``executemany`` and pandas ``to_sql(method="multi")`` on a sample, extrapolated;
- pandas ``to_sql`` into the seed's own table (labels jsonb with a GIN index): what a user writes
  without agts (sample, extrapolated);
- psycopg ``COPY ... write_row`` row by row (sample);
- the server alone: ``COPY FROM`` a CSV file of the already-normalized rows (series ids resolved),
  in arrival order and sorted by (series_id, time).

The peers get rows with series ids already resolved (their labels work is not counted), so they are
measured at their best. Usage::

    .venv/bin/python benchmarks/bench_ingest.py [--points 2000000] [--series 1000] [--repeat 3]
    .venv/bin/python benchmarks/bench_ingest.py --stream 10000000   # pipeline memory over time

``--stream N`` pushes N points through one pipeline in frames generated on the fly and prints the
process's resident memory every 10 % of the way: it stays flat when nothing accumulates.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.db import conninfo, resolved_password
from agts.ingest._normalize import normalize

NAMES = ["order_latency_ms", "fill_rate", "pnl_usd", "queue_depth", "mid_price", "spread_bps"]
VENUES = ["binance", "coinbase", "kraken", "okx", "bybit"]
LABELS = pl.Struct({"venue": pl.String, "market": pl.String, "strategy": pl.String,
                    "host": pl.String})
DB = "agts_bench_ingest"


def generate(points: int, series: int, seed: int = 7, first_step: int = 0) -> pl.DataFrame:
    """``points`` metric points over ``series`` series, 1 s apart per series, arriving second by
    second (the series within a second in random order)."""
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(series):
        labels.append({"venue": VENUES[i % 5], "market": f"M{i // 30:03d}-USDT",
                       "strategy": f"s{i % 7}" if i % 3 else None,
                       "host": f"h{i % 11}" if i % 4 == 0 else None})
    per = -(-points // series)
    sid = np.repeat(np.arange(series), per)[:points]
    step = np.tile(np.arange(per), series)[:points]
    order = np.lexsort((rng.random(points), step))
    sid, step = sid[order], step[order] + first_step
    start = np.datetime64("2026-01-05T00:00:00", "us")
    return pl.DataFrame({
        "timestamp": pl.Series(start + step * np.timedelta64(1_000_000, "us")).dt.replace_time_zone(
            "UTC"),
        "metric_name": pl.Series([NAMES[i % len(NAMES)] for i in range(series)])[sid],
        "value": rng.normal(100.0, 10.0, points),
        "labels": pl.Series(labels, dtype=LABELS)[sid],
    })


def admin_conninfo(config: StorageConfig) -> str:
    return conninfo(config.with_overrides(database={"database": "postgres"}).database)


def reset(engine: agts.StorageEngine) -> None:
    with engine.db.connection() as conn:
        conn.execute("TRUNCATE agts.metric_points, agts.ingest_batches")
        found = conn.execute("SELECT to_regclass('public.seed_metrics')").fetchone()
        if found and found[0]:
            conn.execute("TRUNCATE public.seed_metrics")
        conn.commit()
        conn.execute("CHECKPOINT")


def timed(engine: agts.StorageEngine, fn: Callable[[], int],
          table: str = "agts.metric_points") -> tuple[int, float]:
    reset(engine)
    started = time.perf_counter()
    n = fn()
    elapsed = time.perf_counter() - started
    with engine.db.connection() as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(*table.split(".")))).fetchone()
    assert row is not None and row[0] == n, f"stored {row} points, expected {n}"
    return n, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the big methods")
    parser.add_argument("--batch-size", type=int, default=100_000,
                        help="pipeline batch size (points per transaction)")
    parser.add_argument("--sample", type=int, default=20_000,
                        help="points for executemany and to_sql (extrapolated)")
    parser.add_argument("--seed-sample", type=int, default=100_000,
                        help="points for to_sql into the seed's table (its GIN index slows "
                             "down as it grows: a small sample into an empty table flatters it)")
    parser.add_argument("--copy-sample", type=int, default=300_000,
                        help="points for psycopg COPY write_row (extrapolated)")
    parser.add_argument("--skip-slow", action="store_true", help="skip executemany and to_sql")
    parser.add_argument("--stream", type=int, metavar="N",
                        help="only stream N points through the pipeline, printing memory")
    args = parser.parse_args(argv)

    base = StorageConfig.load()
    with psycopg.connect(admin_conninfo(base), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    config = base.with_overrides(database={"database": DB})
    try:
        with agts.connect(config, migrate=True) as engine:
            if args.stream:
                stream(engine, args)
            else:
                run(engine, config, args)
    finally:
        with psycopg.connect(admin_conninfo(base), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(DB)))
    return 0


def rss_mib() -> float:
    """Resident memory of this process now (not the peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def stream(engine: agts.StorageEngine, args: argparse.Namespace) -> None:
    """Push ``args.stream`` points through one pipeline; memory every 10 % of the way."""
    frame_points = 20 * args.series  # 20 seconds of every series per put
    total = -(-args.stream // frame_points) * frame_points
    marks = {round(total * k / 10 / frame_points) for k in range(1, 11)}
    print(f"streaming {total:,} points ({args.series:,} series) through the pipeline in frames of "
          f"{frame_points:,}, batches of {args.batch_size:,}")
    print(f"{'points put':>12} {'written':>12} {'seconds':>8} {'points/s':>10} {'RSS MiB':>8}")
    began = time.perf_counter()
    with engine.ingestor(batch_size=args.batch_size, max_buffer_size=4 * args.batch_size,
                         flush_interval_ms=1000, spool_dir=Path(tempfile.mkdtemp())) as ing:
        for i in range(total // frame_points):
            ing.put(generate(frame_points, args.series, seed=i, first_step=20 * i))
            if i + 1 in marks:
                done = (i + 1) * frame_points
                took = time.perf_counter() - began
                print(f"{done:>12,} {ing.stats().points_written:>12,} {took:>8.1f} "
                      f"{done / took:>10,.0f} {rss_mib():>8.0f}", flush=True)
    took = time.perf_counter() - began
    written = ing.stats().points_written
    with engine.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()
    assert row is not None and row[0] == written == total, (row, written, total)
    print(f"closed: {written:,} points stored in {took:.1f} s = {written / took:,.0f} points/s; "
          f"RSS {rss_mib():.0f} MiB")


def run(engine: agts.StorageEngine, config: StorageConfig, args: argparse.Namespace) -> None:
    t = time.perf_counter()
    frame = generate(args.points, args.series)
    print(f"generated {frame.height:,} points, {args.series:,} series, "
          f"{frame['metric_name'].n_unique()} metric names, 2-4 labels "
          f"in {time.perf_counter() - t:.1f}s; {os.cpu_count()} cores (shared machine)")
    results: dict[str, list[float]] = {}
    counts: dict[str, tuple[int, bool]] = {}

    def measure(label: str, fn: Callable[[], int], *, sampled: bool = False,
                table: str = "agts.metric_points") -> None:
        n, s = timed(engine, fn, table)
        results.setdefault(label, []).append(s)
        counts[label] = (n, sampled)

    # Normalized rows for the peers (series ids resolved outside the timing).
    engine.insert_metrics_batch(frame.head(args.series * 2))
    batch = normalize(frame)
    ids, _ = engine._metrics_writer().series_ids(batch.series)
    rows = pl.DataFrame({"time": batch.points["time"],
                         "series_id": pl.Series(ids).gather(batch.points["key"]),
                         "value": batch.points["value"]})

    def pipeline() -> int:
        with engine.ingestor(batch_size=args.batch_size, max_buffer_size=4 * args.batch_size,
                             flush_interval_ms=1000, spool_dir=Path(tempfile.mkdtemp())) as ing:
            for offset in range(0, frame.height, 20_000):
                ing.put(frame.slice(offset, 20_000))
        return ing.stats().points_written

    copy_sample = rows.head(args.copy_sample)

    def copy_rows() -> int:
        with engine.db.connection() as conn, conn.cursor() as cur, cur.copy(
            "COPY agts.metric_points (time, series_id, value) FROM STDIN"
        ) as copy:
            for row in copy_sample.iter_rows():
                copy.write_row(row)
        return copy_sample.height

    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        files: list[tuple[str, Path]] = []
        for label, data in (("arrival order", rows),
                            ("sorted by series_id, time", rows.sort("series_id", "time"))):
            path = Path(tmp) / f"points-{len(files)}.csv"
            data.with_columns(pl.col("time").dt.to_string("%Y-%m-%d %H:%M:%S%.6f+00")).write_csv(
                path, include_header=False)
            os.chmod(path, 0o644)
            files.append((label, path))

        def server_copy(path: Path) -> int:
            with engine.db.connection() as conn:
                conn.execute(sql.SQL("COPY agts.metric_points (time, series_id, value) "
                                     "FROM {} (FORMAT csv)").format(sql.Literal(str(path))))
            return rows.height

        for r in range(args.repeat):
            measure("agts insert_metrics_batch (polars, labels)",
                    lambda: engine.insert_metrics_batch(frame).rows_written)
            measure(f"agts pipeline, idempotent (batches of {args.batch_size:,})", pipeline)
            measure("psycopg COPY write_row (sample, extrapolated)", copy_rows, sampled=True)
            for label, path in files:
                measure(f"server COPY FROM file ({label})", functools.partial(server_copy, path))
            print(f"  round {r + 1}/{args.repeat} done", flush=True)

    single_put(engine)
    if not args.skip_slow:
        slow_peers(engine, config, rows, frame.head(args.seed_sample), args.sample, measure)
    report(results, counts, args.repeat)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:,.0f} MiB")


def single_put(engine: agts.StorageEngine, n: int = 100_000) -> None:
    """What one ``Ingestor.put()`` of one MetricPoint costs the producer (point built included)."""
    reset(engine)
    start = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    labels = [{"venue": v, "market": "BTC-USDT"} for v in VENUES]
    with engine.ingestor(batch_size=10_000, max_buffer_size=n, spool_dir=tempfile.mkdtemp()) as ing:
        began = time.perf_counter()
        for i in range(n):
            ing.put(agts.MetricPoint(start + dt.timedelta(microseconds=i), "order_latency_ms",
                                     float(i % 97), labels[i % 5]))
        took = time.perf_counter() - began
    assert ing.stats().points_written == n
    print(f"  Ingestor.put() of one MetricPoint: {took / n * 1e6:.1f} us per put "
          f"({n:,} puts, all stored)")


def slow_peers(engine: agts.StorageEngine, config: StorageConfig, rows: pl.DataFrame,
               seed_rows: pl.DataFrame, sample: int, measure: Callable[..., None]) -> None:
    """executemany and to_sql on a sample (once: they take seconds for a few thousand points)."""
    tuples_sql = "INSERT INTO agts.metric_points (time, series_id, value) VALUES (%s, %s, %s)"
    narrow = rows.head(sample)

    def executemany() -> int:
        with engine.db.connection() as conn, conn.cursor() as cur:
            cur.executemany(tuples_sql, narrow.rows())
        return narrow.height
    measure("psycopg executemany (sample, extrapolated)", executemany, sampled=True)
    try:
        import sqlalchemy
        from sqlalchemy.dialects.postgresql import JSONB
    except ImportError:
        print("pandas to_sql skipped: SQLAlchemy is not installed")
        return
    url = sqlalchemy.engine.URL.create(
        "postgresql+psycopg", username=config.database.user,
        password=resolved_password(config.database), host=config.database.host,
        port=config.database.port, database=DB)
    eng = sqlalchemy.create_engine(url)
    with engine.db.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS public.seed_metrics (timestamp timestamptz "
                     "NOT NULL, metric_name text NOT NULL, value double precision NOT NULL, "
                     "labels jsonb NOT NULL DEFAULT '{}')")
        conn.execute("CREATE INDEX IF NOT EXISTS seed_metrics_labels ON public.seed_metrics "
                     "USING gin (labels)")
        conn.execute("CREATE INDEX IF NOT EXISTS seed_metrics_name_time ON public.seed_metrics "
                     "(metric_name, timestamp)")
    seed_frame = seed_rows.with_columns(
        pl.col("labels").map_elements(lambda v: {k: x for k, x in v.items() if x is not None},
                                      return_dtype=pl.Object)).to_pandas()

    def to_sql() -> int:
        narrow.to_pandas().to_sql("metric_points", eng, schema="agts", if_exists="append",
                                  index=False, method="multi", chunksize=1000)
        return narrow.height

    def to_sql_seed() -> int:
        seed_frame.to_sql("seed_metrics", eng, schema="public", if_exists="append", index=False,
                          method="multi", chunksize=1000, dtype={"labels": JSONB})
        return len(seed_frame)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas prefers its own connectables
            measure("pandas to_sql method=multi (sample, extrapolated)", to_sql, sampled=True)
            measure("pandas to_sql into the seed's jsonb table (sample, extrapolated)",
                    to_sql_seed, sampled=True, table="public.seed_metrics")
    finally:
        eng.dispose()


def report(results: dict[str, list[float]], counts: dict[str, tuple[int, bool]],
           repeat: int) -> None:
    seconds = {label: statistics.median(times) for label, times in results.items()}
    rate = {label: counts[label][0] / s for label, s in seconds.items()}
    limit = max(v for k, v in rate.items() if k.startswith("server COPY"))
    batch = rate["agts insert_metrics_batch (polars, labels)"]
    print()
    print(f"{'method':<66} {'points':>10} {'seconds':>8} {'points/s':>11} "
          f"{'vs server':>9} {'agts is':>8}")
    for label, s in seconds.items():
        print(f"{label:<66} {counts[label][0]:>10,} {s:>8.2f} {rate[label]:>11,.0f} "
              f"{rate[label] / limit:>9.2f} {batch / rate[label]:>7.2f}x")
    print(f"\nseconds: median of {repeat} interleaved rounds (sampled peers: one run); "
          "'vs server' = / the best server-side COPY FROM file; 'agts is' = agts "
          "insert_metrics_batch points/s / this method's.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
