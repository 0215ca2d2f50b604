"""The query result cache and the per-kind query statistics.

The cache keeps results of identical queries over *closed* ranges only: ``end`` at least
:data:`CLOSED_AFTER` in the past when the query ran. Points can still arrive late for a closed
range, so a hit is served only if the ingest ledger (``agts.ingest_batches``) shows no batch
touching the range that was not already there when the entry was computed (nor a cold-tier unit
over the range archived, dropped or restored since): the batches touching
the range whose transaction began from :data:`LEDGER_SLACK` before the query on are counted
before the query runs and again on every hit; a different count is a miss. (A batch that began
earlier than that and committed after the query is the case this cannot see.) Entries expire after
``query.cache_ttl_sec``; the least recently used go first beyond ``query.cache_max_entries``.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg

from agts.db._database import Database
from agts.errors import translate

__all__ = ["CLOSED_AFTER", "LEDGER_SLACK", "QueryCache", "QueryStats"]

CLOSED_AFTER = timedelta(seconds=60)
LEDGER_SLACK = timedelta(minutes=1)

_TOUCHING_LEDGER = """
SELECT (SELECT count(*) FROM agts.ingest_batches
        WHERE ingested_at >= %(since)s AND min_time < %(end)s AND max_time >= %(start)s),
       NULL::timestamptz
"""
# Archiving drops rows from the hot tier and restoring brings them back: the latest state change of
# a cold-tier unit over the range is part of the marker, so a drop or restore voids the entry.
_TOUCHING = """
SELECT (SELECT count(*) FROM agts.ingest_batches
        WHERE ingested_at >= %(since)s AND min_time < %(end)s AND max_time >= %(start)s),
       (SELECT max(updated_at) FROM agts.archive_units
        WHERE range_start < %(end)s AND range_end > %(start)s)
"""

#: What :meth:`QueryCache.mark` records: ledger batches touching the range, last cold-tier change.
Marker = tuple[int, datetime | None]


@dataclass
class _Entry:
    frame: pl.DataFrame
    stored_mono: float
    stored_at: datetime
    start: datetime
    end: datetime
    batches: Marker


class QueryCache:
    """Results by query key, for closed ranges, checked against the ingest ledger on every hit."""

    def __init__(self, db: Database, *, ttl_sec: float, max_entries: int) -> None:
        self._db = db
        self.ttl_sec = ttl_sec
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl_sec > 0 and self.max_entries > 0

    def cacheable(self, end: datetime) -> bool:
        return self.enabled and end <= datetime.now(UTC) - CLOSED_AFTER

    def get(self, key: Hashable) -> pl.DataFrame | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry.stored_mono > self.ttl_sec:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        if entry.start < entry.end and self._changed(entry):
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry.frame

    def mark(self, start: datetime, end: datetime) -> tuple[datetime, Marker]:
        """Call before computing a result to cache: the ledger's state for ``[start, end)``."""
        stored_at = datetime.now(UTC)
        return stored_at, self._touching(stored_at, start, end)

    def put(self, key: Hashable, frame: pl.DataFrame, start: datetime, end: datetime,
            marker: tuple[datetime, Marker]) -> None:
        with self._lock:
            self._entries[key] = _Entry(frame, time.monotonic(), marker[0], start, end, marker[1])
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _changed(self, entry: _Entry) -> bool:
        return self._touching(entry.stored_at, entry.start, entry.end) != entry.batches

    def _touching(self, stored_at: datetime, start: datetime, end: datetime) -> Marker:
        try:
            params = {"since": stored_at - LEDGER_SLACK, "end": end, "start": start}
            with self._db.connection() as conn, conn.cursor() as cur:
                try:
                    with conn.transaction():
                        cur.execute(_TOUCHING, params)
                except psycopg.errors.UndefinedTable:  # schema older than the cold tier (0005)
                    cur.execute(_TOUCHING_LEDGER, params)
                row = cur.fetchone()
        except Exception as exc:
            raise translate(exc, action="check the query cache") from exc
        return (int(row[0]), row[1]) if row else (0, None)


@dataclass
class _KindStats:
    queries: int = 0
    rows: int = 0
    hits: int = 0
    misses: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=2048))


class QueryStats:
    """Latency, rows and cache outcomes per query kind (thread-safe)."""

    def __init__(self) -> None:
        self._kinds: dict[str, _KindStats] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, *, seconds: float, rows: int, cache: bool | None) -> None:
        """One query: ``cache`` is True for a hit, False for a miss, None when not cacheable."""
        with self._lock:
            stats = self._kinds.setdefault(kind, _KindStats())
            stats.queries += 1
            stats.rows += rows
            stats.latencies_ms.append(seconds * 1000)
            if cache is True:
                stats.hits += 1
            elif cache is False:
                stats.misses += 1

    def frame(self) -> pl.DataFrame:
        """One row per query kind; latency figures over the last 2048 queries of the kind."""
        rows = []
        with self._lock:
            for kind, s in sorted(self._kinds.items()):
                lat = sorted(s.latencies_ms)
                lookups = s.hits + s.misses
                rows.append({
                    "kind": kind, "queries": s.queries, "rows": s.rows,
                    "mean_ms": statistics.fmean(lat) if lat else None,
                    "p50_ms": _rank(lat, 0.50), "p95_ms": _rank(lat, 0.95),
                    "max_ms": lat[-1] if lat else None,
                    "cache_hits": s.hits, "cache_misses": s.misses,
                    "cache_hit_rate": s.hits / lookups if lookups else None,
                })
        return pl.DataFrame(rows, schema={
            "kind": pl.String, "queries": pl.Int64, "rows": pl.Int64, "mean_ms": pl.Float64,
            "p50_ms": pl.Float64, "p95_ms": pl.Float64, "max_ms": pl.Float64,
            "cache_hits": pl.Int64, "cache_misses": pl.Int64, "cache_hit_rate": pl.Float64})

    def reset(self) -> None:
        with self._lock:
            self._kinds.clear()


def _rank(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]
