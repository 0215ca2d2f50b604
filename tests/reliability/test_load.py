"""Load: several producer processes and a notebook-style reader at once, for a bounded time.

Reports sustained points/s, p99 ingest (batch) latency and query latency under write load into
``reliability.json``; asserts no errors, no pool exhaustion, bounded memory and exactly-once
storage of everything the producers were told was written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import agts
from agts.config import StorageConfig
from agts.db import conninfo
from tests.reliability._data import T0
from tests.reliability._load_producer import SERIES, rss_mb
from tests.reliability.conftest import Record, admin, idle_in_transaction

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS = 3
SECONDS = float(os.environ.get("AGTS_LOAD_SECONDS", "20"))
RSS_GROWTH_MB = 64  # per process, from after warm-up to the end


def test_producers_and_a_notebook_reader_under_load(config: StorageConfig, record: Record) -> None:
    env = {**os.environ, "AGTS_DSN": conninfo(config.database)}
    env.pop("AGTS_CONFIG", None)
    reader_cfg = config.with_overrides(database={"max_connections": 2})
    with agts.connect(reader_cfg) as engine:
        store = agts.ExecutionStore(engine)
        procs = [subprocess.Popen(
            [sys.executable, "-m", "tests.reliability._load_producer", f"p{i}", str(SECONDS)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(PRODUCERS)]
        stop = threading.Event()
        latencies: dict[str, list[float]] = {"raw": [], "aggregated": [], "orders": []}
        errors: list[BaseException] = []
        peak_sessions = [0]
        rss = {"warm": 0.0, "end": 0.0}

        def notebook() -> None:
            started = time.monotonic()
            while not stop.is_set():
                try:
                    for kind, run in (
                        ("raw", lambda: engine.query_metrics(
                            "load", T0, T0 + timedelta(seconds=5), {"producer": "p0", "s": "3"})),
                        ("aggregated", lambda: engine.query_aggregated(
                            "load", T0, T0 + timedelta(hours=1), "1m", ["avg", "max", "count"],
                            group_by=["producer"])),
                        ("orders", lambda: store.query_orders(T0, T0 + timedelta(days=1))),
                    ):
                        engine.clear_query_cache()  # a notebook re-running its cells
                        t = time.perf_counter()
                        run()
                        latencies[kind].append(time.perf_counter() - t)
                except BaseException as exc:
                    errors.append(exc)
                    return
                if not rss["warm"] and time.monotonic() - started > min(5.0, SECONDS / 4):
                    rss["warm"] = rss_mb()
                with admin(config) as conn:
                    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                       (config.database.database,)).fetchone()
                peak_sessions[0] = max(peak_sessions[0], row[0] if row else 0)
                time.sleep(0.05)

        reader = threading.Thread(target=notebook)
        reader.start()
        outputs = []
        try:
            for p in procs:
                out, err = p.communicate(timeout=SECONDS + 120)
                assert p.returncode == 0, err[-2000:]
                outputs.append(json.loads(out.strip().splitlines()[-1]))
        finally:
            stop.set()
            reader.join(60)
            for p in procs:
                if p.poll() is None:
                    p.kill()
        rss["end"] = rss_mb()

        assert errors == [], f"the reader failed under load: {errors[0]!r}"
        assert [o["errors"] for o in outputs] == [0] * PRODUCERS, [o["error_text"] for o in outputs]
        with engine.db.connection() as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT (series_id, time)) "
                               "FROM agts.metric_points").fetchone()
            nseries = conn.execute("SELECT count(*) FROM agts.series WHERE metric_name = 'load'"
                                   ).fetchone()
        written = sum(o["points"] for o in outputs)
        assert row == (written, written)  # every acknowledged point once
        assert nseries == (PRODUCERS * SERIES,)
        for o in outputs:
            assert o["rss_end_mb"] - o["rss_warm_mb"] < RSS_GROWTH_MB, o
        assert rss["end"] - rss["warm"] < RSS_GROWTH_MB, rss
        # No pool exhaustion: no call above failed waiting for a connection, and the sessions
        # stayed within the pools' bounds (reader 2 + per producer its pool, plus the probe).
        assert peak_sessions[0] <= 2 + PRODUCERS * 10 + 2
        assert idle_in_transaction(config) == []

    seconds = max(o["seconds"] for o in outputs)

    def q(kind: str, pct: float) -> float:
        return round(float(np.percentile(np.asarray(latencies[kind]) * 1000, pct)), 1)

    figures = {
        "producers": PRODUCERS, "seconds": round(seconds, 1), "points_written": written,
        "points_per_second": round(written / seconds),
        "batch_points": SERIES * 200,
        "ingest_batch_p50_ms": round(float(np.median([o["p50_ms"] for o in outputs])), 1),
        "ingest_batch_p99_ms_worst_producer": round(max(o["p99_ms"] for o in outputs), 1),
        "ingest_batch_max_ms": round(max(o["max_ms"] for o in outputs), 1),
        "queries": {k: len(v) for k, v in latencies.items()},
        "query_raw_p50_ms": q("raw", 50), "query_raw_p99_ms": q("raw", 99),
        "query_aggregated_p50_ms": q("aggregated", 50), "query_aggregated_p99_ms": q("aggregated", 99),
        "query_orders_p50_ms": q("orders", 50),
        "peak_sessions": peak_sessions[0],
        "rss_growth_mb": {o["producer"]: round(o["rss_end_mb"] - o["rss_warm_mb"], 1)
                          for o in outputs} | {"reader": round(rss["end"] - rss["warm"], 1)},
        "errors": 0, "duplicates": 0, "lost": 0,
    }
    print("\nload figures: " + json.dumps(figures))
    record("load: producers + notebook reader", **figures)
