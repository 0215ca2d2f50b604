"""History in the cold tier (Iceberg) next to the hot tier, DuckDB over the same Parquet files,
``pl.scan_iceberg`` and ArcticDB, in one run.

Data (generated here, seeded, as bench_tsbs.py): --hosts hosts (default 100) x 10 cpu metrics every
10 s for 12 h of one UTC day (4.32M points), archived with ``archive(drop=True)``; one more hour of
the next day stays hot. Questions (the issue's): (a) one metric, one host, 1 h raw; (b) 10
metrics, one host, 12 h, wide; (c) hourly mean of one metric per host over 12 h; (d) the day's
scan of one metric. Each runs --repeat times over rotating hosts and windows, medians in ms.

- agts hot: before the day is archived (``tiers="hot"``).
- agts cold: after (``tiers="all"``, the archived day answered from the Iceberg table's files).
- DuckDB: ``read_parquet`` over the current snapshot's data files, filtering on labels.
- pl.scan_iceberg: Polars over the pyiceberg table, the same filters.
- ArcticDB: local LMDB, one symbol per host with a column per metric (what an ArcticDB user
  writes), in a virtualenv of its own (``.venv-bench-arctic``, made on first use: ArcticDB needs
  pandas < 3); ``--no-arctic`` leaves it out.

Also printed: export speed (points/s) and Parquet bytes against the hypertable's, and what
``tiers="all"`` costs over ``"hot"`` on a range with no archived data.

    .venv/bin/python benchmarks/bench_cold.py [--hosts 100] [--repeat 15] [--no-arctic]

The data goes to a database of its own (dropped at the end) on the server ``agts.connect()``
reaches, and the archive to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
from bench_tsbs import METRICS, T0, generate, load

import agts
from agts.config import StorageConfig

ARCTIC_VENV = Path(__file__).resolve().parent.parent / ".venv-bench-arctic"
ARCTIC_PINS = ["arcticdb==6.28.2", "pandas==2.3.3", "pyarrow==26.0.1"]
HOURS = 12
T12 = T0 + timedelta(hours=HOURS)
ONE = METRICS[0]


def median_ms(func: Callable[[dict[str, Any]], Any], params: list[dict[str, Any]],
              repeat: int) -> float:
    times = []
    for i in range(repeat + 1):
        began = time.perf_counter()
        func(params[i % len(params)])
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times[1:])


def agts_calls(engine: agts.StorageEngine, tiers: Any) -> dict[str, Callable[[dict], Any]]:
    return {
        "a": lambda p: engine.query_metrics(ONE, p["start"], p["start"] + timedelta(hours=1),
                                            {"hostname": p["host"]}, tiers=tiers),
        "b": lambda p: engine.query_metrics_multi(METRICS, T0, T12, {"hostname": p["host"]},
                                                  shape="wide", tiers=tiers),
        "c": lambda p: engine.query_aggregated(ONE, T0, T12, "1h", "avg",
                                               group_by=["hostname"], tiers=tiers),
        "d": lambda p: engine.query_metrics(ONE, T0, T12, tiers=tiers),
    }


def duck_calls(files: list[str]) -> dict[str, Callable[[dict], Any]]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.read_parquet(files).create_view("cold")
    host = "labels['hostname']"
    listed = ", ".join(f"'{m}'" for m in METRICS)  # constants of this file

    def run(query: str, params: list[Any]) -> Any:
        return con.sql(query, params=params).to_arrow_table()

    return {
        "a": lambda p: run(
            f"SELECT timestamp, value FROM cold WHERE metric_name = ? AND {host} = ? "
            "AND timestamp >= ? AND timestamp < ? ORDER BY timestamp",
            [ONE, p["host"], p["start"], p["start"] + timedelta(hours=1)]),
        "b": lambda p: run(
            "PIVOT (SELECT timestamp, metric_name, value FROM cold WHERE "
            f"{host} = ? AND timestamp >= ? AND timestamp < ?) ON metric_name IN ({listed}) "
            "USING first(value) ORDER BY timestamp", [p["host"], T0, T12]),
        "c": lambda p: run(
            f"SELECT time_bucket(INTERVAL 1 hour, timestamp) AS bucket, {host} AS hostname, "
            "avg(value) FROM cold WHERE metric_name = ? AND timestamp >= ? AND timestamp < ? "
            "GROUP BY ALL ORDER BY 1, 2", [ONE, T0, T12]),
        "d": lambda p: run(
            "SELECT timestamp, value, labels FROM cold WHERE metric_name = ? AND timestamp >= ? "
            "AND timestamp < ?", [ONE, T0, T12]),
    }


def polars_calls(table: Any) -> dict[str, Callable[[dict], Any]]:
    os.environ.setdefault("POLARS_ICEBERG_PLANNER", "pyiceberg")
    host = pl.col("labels").map.get("hostname")

    def lazy() -> pl.LazyFrame:
        return pl.scan_iceberg(table)

    def window(start: datetime, end: datetime) -> pl.Expr:
        return (pl.col("timestamp") >= start) & (pl.col("timestamp") < end)

    return {
        "a": lambda p: lazy().filter(pl.col("metric_name") == ONE, host == p["host"],
                                     window(p["start"], p["start"] + timedelta(hours=1)))
        .select("timestamp", "value").sort("timestamp").collect(),
        "b": lambda p: lazy().filter(host == p["host"], window(T0, T12))
        .select("timestamp", "metric_name", "value").collect()
        .pivot("metric_name", index="timestamp", values="value").sort("timestamp"),
        "c": lambda p: lazy().filter(pl.col("metric_name") == ONE, window(T0, T12))
        .group_by(pl.col("timestamp").dt.truncate("1h"), host.alias("hostname"))
        .agg(pl.col("value").mean()).collect(),
        "d": lambda p: lazy().filter(pl.col("metric_name") == ONE, window(T0, T12))
        .select("timestamp", "value", "labels").collect(),
    }


def arctic(wide: pl.DataFrame, params: list[dict[str, Any]], repeat: int) -> dict[str, Any]:
    python = ARCTIC_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {ARCTIC_VENV} for ArcticDB ({', '.join(ARCTIC_PINS)}) ...")
        subprocess.run([sys.executable, "-m", "venv", str(ARCTIC_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *ARCTIC_PINS], check=True)
    with tempfile.TemporaryDirectory(prefix="agts-bench-cold-") as folder:
        wide.write_parquet(f"{folder}/wide.parquet")
        Path(f"{folder}/params.json").write_text(json.dumps({
            "metrics": METRICS, "t0": T0.isoformat(), "t12": T12.isoformat(),
            "params": [{"host": p["host"], "start": p["start"].isoformat()} for p in params]}))
        out = subprocess.run([str(python), str(Path(__file__).parent / "_arctic_side.py"),
                              f"{folder}/wide.parquet", f"{folder}/params.json", str(repeat)],
                             capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the ArcticDB side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-arctic", action="store_true", help="leave ArcticDB out")
    parser.add_argument("--dsn", help="server (default: what agts.connect() reaches)")
    args = parser.parse_args()
    base = StorageConfig.from_dsn(args.dsn) if args.dsn else StorageConfig.load()
    root = tempfile.mkdtemp(prefix="agts-bench-cold-archive-")
    base = base.with_overrides(query={"cache_ttl_sec": 0, "max_results": 10_000_000},
                               archive={"root": root})
    wide = generate(args.hosts, HOURS, args.seed)
    later = generate(args.hosts, 1, args.seed + 1).with_columns(
        pl.col("time") + timedelta(days=1))
    rng = random.Random(args.seed)
    params = [{"host": f"host_{rng.randrange(args.hosts)}",
               "start": T0 + timedelta(minutes=rng.randrange((HOURS - 1) * 60))}
              for _ in range(8)]
    print(f"{wide.height * len(METRICS):,} points archived ({args.hosts} hosts x "
          f"{len(METRICS)} metrics every 10 s for {HOURS} h), {later.height * len(METRICS):,} "
          "hot on the next day")
    rows: dict[str, dict[str, float]] = {q: {} for q in "abcd"}
    answers: dict[str, dict[str, int]] = {q: {} for q in "abcd"}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        cfg = stack.enter_context(agts.temporary_database(base, prefix="agts_bench_cold"))
        engine = stack.enter_context(agts.connect(cfg, migrate=True))
        print(f"loaded in {load(engine, pl.concat([wide, later])):.1f} s")
        engine.refresh_rollups()
        for name, call in agts_calls(engine, "hot").items():
            answers[name]["agts hot"] = len(call(params[0]))
            rows[name]["agts hot"] = median_ms(call, params, args.repeat)
        with engine.db.connection() as conn:
            [(size,)] = conn.execute(
                "SELECT sum(s.total_bytes) FROM chunks_detailed_size('agts.metric_points') s "
                "JOIN timescaledb_information.chunks c ON c.chunk_schema = s.chunk_schema "
                "AND c.chunk_name = s.chunk_name AND c.range_end <= %s",
                [T0 + timedelta(days=1)]).fetchall()
            table_bytes = int(size)
        report = engine.export_cold("metrics", T0, T0 + timedelta(days=1))
        export_rate = report.rows_exported / report.duration_sec
        dropped = engine.archive("metrics", T0, T0 + timedelta(days=1), drop=True)
        assert dropped.rows_dropped == wide.height * len(METRICS), dropped
        table = engine.iceberg_table("metrics")
        files = [f.removeprefix("file://") for f in table.inspect.files()["file_path"].to_pylist()]
        contenders = {"agts cold": agts_calls(engine, "all"), "DuckDB": duck_calls(files),
                      "pl.scan_iceberg": polars_calls(table)}
        for who, calls in contenders.items():
            for name, call in calls.items():
                answers[name][who] = len(call(params[0]))
                rows[name][who] = median_ms(call, params, args.repeat)
        hot_only = [{**p, "start": p["start"] + timedelta(days=1) - timedelta(
            minutes=p["start"].minute)} for p in params]
        a_hot = agts_calls(engine, "hot")["a"]
        a_all = agts_calls(engine, "all")["a"]
        extra = median_ms(a_all, hot_only, args.repeat * 3) - median_ms(a_hot, hot_only,
                                                                        args.repeat * 3)
        if not args.no_arctic:
            side = arctic(wide, params, args.repeat)
            for name in "abcd":
                rows[name]["ArcticDB"] = side[name]
                answers[name]["ArcticDB"] = side[f"{name}_rows"]
    print(f"\nexport: {export_rate / 1e6:.2f}M points/s; Parquet {report.bytes_written / 1e6:.1f} MB "
          f"= {report.bytes_written / table_bytes:.3f} x the hypertable's {table_bytes / 1e6:.1f} MB")
    print(f"tiers='all' on a range with no archived data: {extra:+.2f} ms over 'hot'\n")
    names = {"a": "(a) 1 metric, 1 host, 1 h raw", "b": "(b) 10 metrics, 1 host, 12 h wide",
             "c": "(c) hourly mean per host, 12 h", "d": "(d) day scan of 1 metric"}
    who = ["agts hot", "agts cold", "DuckDB", "pl.scan_iceberg", "ArcticDB"]
    print(f"{'question':<36}" + "".join(f"{w:>16}" for w in who) + f"{'cold ÷ Arctic':>15}")
    for name, label in names.items():
        line = f"{label:<36}" + "".join(
            f"{rows[name][w]:>13.1f} ms" if w in rows[name] else f"{'-':>16}" for w in who)
        if "ArcticDB" in rows[name]:
            line += f"{rows[name]['agts cold'] / rows[name]['ArcticDB']:>14.2f}x"
        print(line)
    print("\nrows of the first answer: " + "; ".join(
        f"{n}: " + ", ".join(f"{w} {c}" for w, c in answers[n].items()) for n in names))


if __name__ == "__main__":
    main()
