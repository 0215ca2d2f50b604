"""Cold tier: Parquet export vs COPY TO CSV + pyarrow, sizes, cold vs hot aggregates, retention.

Runs on a scratch database (created and dropped here) of the server of ``$AGTS_TEST_DSN`` or the
local default cluster, and a scratch archive directory. Prints figures side by side; not a
pass/fail test.

    .venv/bin/python benchmarks/bench_archive.py [--points 2000000] [--series 200] [--days 10]
    .venv/bin/python benchmarks/bench_archive.py --points 10000000     # the issue's target size
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import psycopg
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

import agts
from agts.db import conninfo

START = datetime(2025, 1, 1, tzinfo=UTC)


def _config(name: str, root: str) -> agts.StorageConfig:
    dsn = os.environ.get("AGTS_TEST_DSN")
    base = agts.StorageConfig.from_dsn(dsn) if dsn else agts.StorageConfig.load(env={})
    base = base.with_overrides(archive={"root": root})
    if base.database.dsn:
        return base.with_overrides(database={
            "dsn": psycopg.conninfo.make_conninfo(base.database.dsn, dbname=name), "database": name})
    return base.with_overrides(database={"database": name})


def _admin(cfg: agts.StorageConfig) -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(conninfo(cfg.database),
                                                          dbname="postgres"), autocommit=True)


def _load(engine: agts.StorageEngine, points: int, series: int, days: int) -> None:
    per_series = points // series
    step_us = days * 86_400_000_000 // per_series
    rng = np.random.default_rng(7)
    done = 0
    for first in range(0, series, 20):
        ids = np.arange(first, min(first + 20, series))
        n = len(ids) * per_series
        frame = pl.DataFrame({
            "timestamp": pl.Series(np.tile(np.arange(per_series) * step_us, len(ids))
                                   + int(START.timestamp() * 1e6)).cast(pl.Datetime("us", "UTC")),
            "metric_name": np.repeat(np.array([f"metric_{i % 10}" for i in ids]), per_series),
            "value": rng.normal(100, 5, n),
            "labels": np.repeat(np.array([f'{{"venue":"v{i % 4}","id":"{i}"}}' for i in ids]),
                                per_series),
        })
        engine.insert_metrics_batch(frame)
        done += n
    print(f"loaded {done:,} points ({series} series over {days} days)")


def _timed(label: str, func, rows: int | None = None):  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - began
    rate = f"{rows / seconds:>14,.0f} rows/s" if rows else ""
    print(f"  {label:<52} {seconds * 1000:>10,.0f} ms {rate}")
    return result, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="export runs (median reported)")
    parser.add_argument("--retention-days", type=int, default=30,
                        help="daily chunks for the retention run timing")
    args = parser.parse_args()

    name = f"agts_bench_archive_{os.getpid()}"
    root = tempfile.mkdtemp(prefix="agts-bench-archive-")
    cfg = _config(name, root)
    with _admin(cfg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with agts.connect(cfg, migrate=True) as engine:
            _load(engine, args.points, args.series, args.days)
            end = START + timedelta(days=args.days)
            with engine.db.connection() as conn:
                hyper = conn.execute("SELECT hypertable_size('agts.metric_points')").fetchone()[0]
                rows = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()[0]
            print("\nexport")
            runs = []
            for i in range(args.repeat):
                if i:  # forget the previous export: the same chunks are exported again
                    with engine.db.connection() as conn:
                        conn.execute("DELETE FROM agts.archive_files")
                        conn.execute("DELETE FROM agts.archive_units")
                    shutil.rmtree(Path(root) / "table=metrics")
                report, took = _timed(f"agts export_cold (ADBC -> Parquet zstd, sha256) #{i + 1}",
                                      lambda: engine.export_cold("metrics", START, end), rows)
                runs.append(took)
            median = statistics.median(runs)
            print(f"  {'agts export_cold, median of ' + str(args.repeat):<52} "
                  f"{median * 1000:>10,.0f} ms {rows / median:>14,.0f} rows/s")
            csv_dir = Path(root) / "csv"
            csv_dir.mkdir()

            def csv_path() -> None:
                with engine.db.connection() as conn, conn.cursor() as cur:
                    buf = io.BytesIO()
                    with cur.copy("COPY (SELECT timestamp, metric_name, value, labels::text "
                                  "FROM agts.metrics) TO STDOUT WITH (FORMAT csv)") as copy:
                        for block in copy:
                            buf.write(block)
                buf.seek(0)
                table = pacsv.read_csv(buf, read_options=pacsv.ReadOptions(
                    column_names=["timestamp", "metric_name", "value", "labels"]))
                pq.write_table(table, csv_dir / "metrics.parquet", compression="zstd")

            _timed("COPY TO CSV (psycopg) + pyarrow csv -> Parquet", csv_path, rows)
            print("\nsize")
            print(f"  hypertable (heap + index)   {hyper / 1e6:>10,.1f} MB")
            print(f"  agts Parquet (zstd)         {report.bytes_written / 1e6:>10,.1f} MB "
                  f"({hyper / max(report.bytes_written, 1):.1f}x smaller)")
            print(f"  CSV-path Parquet            "
                  f"{(csv_dir / 'metrics.parquet').stat().st_size / 1e6:>10,.1f} MB")
            shutil.rmtree(csv_dir)

            print("\naggregate: hourly avg per metric over the whole range")
            with engine.db.connection() as conn:
                _timed("TimescaleDB (time_bucket over agts.metrics)", lambda: conn.execute(
                    "SELECT metric_name, time_bucket('1 hour', timestamp) b, avg(value) "
                    "FROM agts.metrics GROUP BY 1, 2").fetchall())
            with engine.cold() as duck:
                _timed("DuckDB over the Parquet files", lambda: duck.sql(
                    "SELECT metric_name, date_trunc('hour', timestamp) b, avg(value) "
                    "FROM metrics GROUP BY 1, 2").to_arrow_table())
            lazy = engine.scan_cold("metrics")
            _timed("Polars scan_parquet over the files", lambda: lazy.group_by(
                "metric_name", pl.col("timestamp").dt.truncate("1h")).agg(
                pl.col("value").mean()).collect())

            print("\nexport -> verify -> drop (copies exist: verify + drop only)")
            _timed("archive(drop=True)", lambda: engine.archive("metrics", START, end, drop=True),
                   rows)

        print(f"\nretention run over {args.retention_days} daily chunks")
        with agts.connect(cfg.with_overrides(retention={"metrics_retention_days": 1})) as engine:
            now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            first = now - timedelta(days=args.retention_days + 1)
            n = args.retention_days * 24 * 60
            engine.insert_metrics_batch(pl.DataFrame({
                "timestamp": pl.datetime_range(first, first + timedelta(minutes=n - 1), "1m",
                                               eager=True, time_zone="UTC"),
                "metric_name": "retention_probe", "value": np.ones(n), "labels": None,
            }, schema_overrides={"labels": pl.String}))
            result, _ = _timed("run_retention (archive + verify + drop)", engine.run_retention)
            print(f"  chunks archived {result.chunks_archived}, dropped {result.chunks_dropped}, "
                  f"rows {result.rows_dropped:,}, bytes {result.bytes_before:,} -> "
                  f"{result.bytes_after:,}")
    finally:
        with _admin(cfg) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
