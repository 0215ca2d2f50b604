"""One producer of the load test: ``python -m tests.reliability._load_producer NAME SECONDS``.

Connects with ``$AGTS_DSN``, stores batches of 2,000 points (10 series x 200) with
``insert_metrics_batch`` for SECONDS, and prints one JSON line: points written, batch latencies
(p50/p99/max ms), errors, and resident memory after warm-up and at the end.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import polars as pl

import agts
from tests.reliability._data import T0

SERIES = 10
PER_SERIES = 200


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def batch(name: str, k: int) -> pl.DataFrame:
    j = np.arange(PER_SERIES, dtype=np.int64) + k * PER_SERIES
    base = int(T0.timestamp()) * 1_000_000
    return pl.DataFrame({
        "timestamp": pl.Series(np.tile(base + j * 1000, SERIES)).cast(pl.Datetime("us", "UTC")),
        "metric_name": ["load"] * (SERIES * PER_SERIES),
        "value": np.tile(j.astype(float), SERIES),
        "labels": [{"producer": name, "s": str(s)} for s in range(SERIES) for _ in range(PER_SERIES)],
    })


def main() -> int:
    name, seconds = sys.argv[1], float(sys.argv[2])
    latencies: list[float] = []
    written = errors = 0
    error_text: list[str] = []
    with agts.connect() as engine:
        started = time.perf_counter()
        rss_warm = None
        k = 0
        while time.perf_counter() - started < seconds:
            data = batch(name, k)
            t = time.perf_counter()
            try:
                written += engine.insert_metrics_batch(data).rows_written
            except agts.StorageError as exc:
                errors += 1
                error_text.append(str(exc))
            latencies.append(time.perf_counter() - t)
            k += 1
            if rss_warm is None and time.perf_counter() - started > min(5.0, seconds / 4):
                rss_warm = rss_mb()
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    print(json.dumps({
        "producer": name, "points": written, "batches": len(latencies), "seconds": elapsed,
        "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()), "errors": errors, "error_text": error_text[:3],
        "rss_warm_mb": rss_warm, "rss_end_mb": rss_mb(),
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
