"""Hot ∪ cold: what ``tiers="all"`` costs over ``tiers="hot"``, with an empty and a used cold tier.

Runs on a scratch database (created and dropped here) of the server of ``$AGTS_TEST_DSN`` or the
local default cluster, and a scratch archive directory. Prints medians; not a pass/fail test.

    .venv/bin/python benchmarks/bench_tiers.py [--points 400000] [--series 20] [--days 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from bench_archive import START, _admin, _config, _load

import agts


def _median_ms(engine: agts.StorageEngine, func: Callable[[], Any], runs: int = 15) -> float:
    times = []
    for _ in range(runs + 1):
        engine.clear_query_cache()
        began = time.perf_counter()
        func()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times[1:])


def _round(engine: agts.StorageEngine, label: str, days: int) -> None:
    window = (START + timedelta(hours=12), START + timedelta(days=days, hours=-12))
    half = START + timedelta(days=days // 2)
    narrow = (half - timedelta(hours=6), half + timedelta(hours=6))  # across the boundary
    print(f"\n{label}")
    calls: list[tuple[str, Callable[[Any], Any]]] = [
        ("query_metrics (one series, 12 h)",
         lambda t: engine.query_metrics("metric_0", *narrow, {"id": "0"}, tiers=t)),
        (f"query_aggregated 1h avg+p50 ({days - 1} days)",
         lambda t: engine.query_aggregated("metric_0", *window, "1h", ["avg", "p50"], tiers=t)),
    ]
    for name, call in calls:
        hot = _median_ms(engine, lambda: call("hot"))  # noqa: B023 - called before the next turn
        both = _median_ms(engine, lambda: call("all"))  # noqa: B023
        print(f"  {name:<44} hot {hot:>8.1f} ms   all {both:>8.1f} ms   (+{both - hot:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=400_000)
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--days", type=int, default=4)
    args = parser.parse_args()
    name = f"agts_bench_tiers_{os.getpid()}"
    root = tempfile.mkdtemp(prefix="agts-bench-tiers-")
    cfg = _config(name, root)
    with _admin(cfg) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with agts.connect(cfg, migrate=True) as engine:
            _load(engine, args.points, args.series, args.days)
            _round(engine, "cold tier empty (manifest has no unit)", args.days)
            half = START + timedelta(days=args.days // 2)
            engine.archive("metrics", START, half, drop=True)
            _round(engine, f"first {args.days // 2} days archived and dropped", args.days)
    finally:
        with _admin(cfg) as conn:
            conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                psycopg.sql.Identifier(name)))
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
