"""The query result cache and the per-kind query statistics.

The cache keeps results of identical queries over *closed* ranges only: ``end`` at least
:data:`CLOSED_AFTER` in the past when the query ran. Points can still arrive late for a closed
range, so a hit is served only if nothing changed the range since the entry was computed:

- no ingest batch touching the range committed since. Before the query runs, the cache takes the
  xmin of a snapshot (every transaction below it had ended, so the query sees its batches) and
  counts the ledger batches touching the range with ``xid >= xmin``; a hit counts them again, and
  a different count is a miss. A batch whose transaction was open for hours is caught like any
  other (migration 0007);
- no cold-tier unit over the range changed state (archived, dropped, restored): a digest of the
  units' states is part of the marker.

Not seen: writes that bypass agts (``clear_query_cache()``), and chunks that retention drops
*without* archiving them (``archive_before_drop: false``): the engine that runs retention clears its
own cache, other processes keep such frames until they expire.

Entries expire after ``query.cache_ttl_sec``; the least recently used go first beyond
``query.cache_max_entries``. On a schema older than migration 0007 nothing is cached.
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

__all__ = ["CLOSED_AFTER", "QueryCache", "QueryStats"]

CLOSED_AFTER = timedelta(seconds=60)

_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"
# The xmin is always a bound value: a predicate on pg_snapshot_xmin() itself cannot be estimated
# and made the planner scan the whole ledger (55-60 ms at 1M batches, vs 0.03 ms by the xid index).
_TOUCHING = """
SELECT (SELECT count(*) FROM agts.ingest_batches AS b
        WHERE b.xid >= %(xmin)s::xid8 AND b.min_time < %(end)s AND b.max_time >= %(start)s),
       (SELECT md5(string_agg(concat_ws(':', u.unit_id, u.state, u.updated_at), ','
                              ORDER BY u.unit_id))
        FROM agts.archive_units AS u WHERE u.range_start < %(end)s AND u.range_end > %(start)s)
"""

#: What :meth:`QueryCache.mark` records: the snapshot xmin, the ledger batches at or above it
#: touching the range, and a digest of the cold-tier units over the range.
Marker = tuple[str, int, str | None]


@dataclass
class _Entry:
    frame: pl.DataFrame
    stored_mono: float
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

    def get(self, key: Hashable, *, action: str) -> pl.DataFrame | None:
        """The cached result of ``key`` if the rows under it are unchanged; ``action`` names the
        query in an error (the check reads the ingest ledger)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if time.monotonic() - entry.stored_mono > self.ttl_sec:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        if entry.start < entry.end and self._changed(entry, action):
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry.frame

    def mark(self, start: datetime, end: datetime, *, action: str) -> Marker | None:
        """Call before computing a result to cache: the state of ``[start, end)`` (None: do not
        cache, the schema predates migration 0007)."""
        return self._touching(None, start, end, action)

    def put(self, key: Hashable, frame: pl.DataFrame, start: datetime, end: datetime,
            marker: Marker) -> None:
        with self._lock:
            self._entries[key] = _Entry(frame, time.monotonic(), start, end, marker)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _changed(self, entry: _Entry, action: str) -> bool:
        return self._touching(entry.batches[0], entry.start, entry.end, action) != entry.batches

    def _touching(self, xmin: str | None, start: datetime, end: datetime,
                  action: str) -> Marker | None:
        """The marker of ``[start, end)``; ``xmin`` None takes a new one (when marking)."""
        with self._db.connection(action) as conn, conn.cursor() as cur:
            try:
                with conn.transaction():
                    if xmin is None:
                        # Its own statement, so the count below (a later snapshot) and the
                        # query to cache (later still) see every transaction under it.
                        row = cur.execute(_XMIN).fetchone()
                        xmin = str(row[0]) if row else "0"
                    cur.execute(_TOUCHING, {"xmin": xmin, "end": end, "start": start})
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                return None  # a schema older than migration 0007: never cache
            counted = cur.fetchone()
        return (xmin, int(counted[0]), counted[1]) if counted else None


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
