"""Points whose value is their sequence number, so a count check can name every missing or
duplicated point."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import polars as pl

T0 = dt.datetime(2026, 3, 2, tzinfo=dt.UTC)


def seq_points(lo: int, hi: int, *, producer: str = "p0", metric: str = "seq",
               step_us: int = 1000, start: dt.datetime = T0) -> pl.DataFrame:
    """Points ``lo .. hi-1``: timestamp ``start + i * step_us``, value ``i``, one series per
    producer."""
    i = np.arange(lo, hi, dtype=np.int64)
    return pl.DataFrame({
        "timestamp": pl.Series(i * step_us + int(start.timestamp()) * 1_000_000).cast(
            pl.Datetime("us", "UTC")),
        "metric_name": [metric] * len(i),
        "value": i.astype(float),
        "labels": [{"producer": producer}] * len(i),
    })


def check_exactly_once(values: list[float], acked: Iterable[int], *,
                       may_have: Iterable[int] = ()) -> int:
    """Assert every acknowledged value is stored once, nothing is stored twice and nothing
    outside ``acked`` (or ``may_have``) is stored; returns how many rows were checked."""
    seen = np.asarray(values)
    unique, counts = np.unique(seen, return_counts=True)
    duplicates = unique[counts > 1]
    assert duplicates.size == 0, f"{duplicates.size} values stored twice, e.g. {duplicates[:5]}"
    have = set(unique.astype(np.int64).tolist())
    acked = list(acked)
    missing = [v for v in acked if v not in have]
    assert not missing, f"{len(missing)} acknowledged values lost, e.g. {missing[:5]}"
    allowed = set(acked) | set(may_have)
    extra = sorted(have - allowed)
    assert not extra, f"{len(extra)} values stored that were never sent, e.g. {extra[:5]}"
    return len(values)
