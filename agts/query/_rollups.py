"""Rollups: which one answers a query, what it does not hold yet, and how it is refreshed.

Two rollups, ``agts.rollup_1m`` and ``agts.rollup_1h`` (see ``sql/migrations/0004_rollups.up.sql``):
plain tables agts maintains on the Apache edition, continuous aggregates on Community. Both
editions keep the same bookkeeping in ``agts.rollup_state`` (watermark) and
``agts.rollup_seen_batches`` (ledger batches taken in), so routing is the same code:

- a query may use a rollup when every aggregation is derivable from it (not percentiles), the
  bucket is a multiple of the rollup's width and ``start``/``end`` fall on its bucket edges;
- the rollup answers the buckets before its watermark that no unseen ingest batch touched; the rest
  (the tail after the watermark, late-arriving points) is computed from raw points in the same SQL
  statement, so the answer equals the raw computation.

Which batches a refresh still has to look at is decided by transaction id (migration 0007): a
refresh records the xmin of its snapshot, every transaction below it had ended when the refresh
looked, so only ledger batches with ``xid >= xmin`` can be unseen. A batch whose transaction was
open for hours is caught like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from agts.db._database import Database
from agts.query._aggregate import PARTIAL_COLUMNS, ROLLUP_COLUMNS
from agts.query._args import AggSpec

__all__ = ["ROLLUPS", "Rollup", "RollupView", "choose", "read_view", "refresh", "status"]

log = logging.getLogger(__name__)

#: The row of ``agts.locks`` that serializes refreshes (migration 0008; a reader cannot take it).
LOCK = "rollups"


@dataclass(frozen=True)
class Rollup:
    name: str
    width: timedelta

    @property
    def table(self) -> str:
        return f"agts.{self.name}"

    @property
    def width_us(self) -> int:
        return self.width // timedelta(microseconds=1)


#: Coarsest first: routing takes the first that fits.
ROLLUPS = (Rollup("rollup_1h", timedelta(hours=1)), Rollup("rollup_1m", timedelta(minutes=1)))


@dataclass(frozen=True)
class RollupView:
    """A rollup as a query sees it: materialized before ``watermark`` except ``dirty`` (the
    buckets of unseen ingest batches, a ``tstzmultirange`` literal)."""

    rollup: Rollup
    watermark: datetime | None
    dirty: str


def _micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=value.tzinfo)) // timedelta(microseconds=1)


def choose(specs: tuple[AggSpec, ...], bucket: timedelta, start: datetime,
           end: datetime) -> Rollup | None:
    """The coarsest rollup that answers ``specs`` over ``[start, end)`` exactly, or None."""
    if not all(spec.rollup_ok for spec in specs):
        return None
    step = bucket // timedelta(microseconds=1)
    for rollup in ROLLUPS:
        width = rollup.width_us
        if step % width == 0 and _micros(start) % width == 0 and _micros(end) % width == 0:
            return rollup
    return None


_VIEW = """
SELECT s.watermark,
       (SELECT range_agg(tstzrange(time_bucket(s.width, b.min_time),
                                   time_bucket(s.width, b.max_time) + s.width))::text
        FROM agts.ingest_batches AS b
        WHERE b.xid >= s.seen_xmin
          AND b.min_time IS NOT NULL AND b.min_time < s.watermark
          AND b.min_time < %(end)s AND b.max_time >= %(start)s
          AND NOT EXISTS (SELECT 1 FROM agts.rollup_seen_batches AS x
                          WHERE x.rollup = s.rollup AND x.batch_id = b.batch_id))
FROM agts.rollup_state AS s WHERE s.rollup = %(rollup)s
"""


def view_query(rollup: Rollup, start: datetime, end: datetime) -> tuple[str, dict[str, Any]]:
    """The statement :func:`read_view` runs (to send it along with another one)."""
    return _VIEW, {"start": start, "end": end, "rollup": rollup.name}


def view_of(rollup: Rollup, row: Any) -> RollupView:
    """The view from the row of :func:`view_query`."""
    if row is None:
        return RollupView(rollup, None, "{}")
    return RollupView(rollup, row[0], row[1] or "{}")


def read_view(db: Database, rollup: Rollup, start: datetime, end: datetime) -> RollupView:
    """The rollup's watermark and the dirty ranges overlapping ``[start, end)``."""
    with db.read_connection(f"read the state of {rollup.table}") as conn, conn.cursor() as cur:
        cur.execute(*view_query(rollup, start, end))
        row = cur.fetchone()
    return view_of(rollup, row)


_UNSEEN = """
SELECT b.batch_id, b.xid::text, time_bucket(%(width)s, b.min_time),
       time_bucket(%(width)s, b.max_time) + %(width)s
FROM agts.ingest_batches AS b
WHERE b.xid >= %(xmin)s::xid8 AND b.min_time IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM agts.rollup_seen_batches AS x
                  WHERE x.rollup = %(rollup)s AND x.batch_id = b.batch_id)
"""


def _merge(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for low, high in sorted(r for r in ranges if r[0] < r[1]):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


# The earliest point, found per series through the (series_id, time) index: there is no B-tree on
# time alone (migration 0006), and a plain min(time) would read every chunk.
_FIRST_POINT = """
SELECT time_bucket(%s, min(f.time)) FROM agts.series AS s
CROSS JOIN LATERAL (SELECT p.time FROM agts.metric_points AS p WHERE p.series_id = s.series_id
                    ORDER BY p.time LIMIT 1) AS f
"""


def _plan(cur: Any, rollup: Rollup) -> tuple[list[Any], list[tuple[datetime, datetime]], Any, Any]:
    """Read the state and the unseen batches: (batches, ranges to materialize, new watermark,
    new xmin).

    The new xmin is taken by the first statement, so every later statement (the batch list, the
    materialization) sees at least every transaction below it.
    """
    cur.execute("SELECT watermark, seen_xmin::text, time_bucket(width, now()), "
                "pg_snapshot_xmin(pg_current_snapshot())::text FROM agts.rollup_state "
                "WHERE rollup = %s FOR UPDATE", (rollup.name,))
    watermark, xmin, new_watermark, new_xmin = cur.fetchone()
    cur.execute(_UNSEEN, {"width": rollup.width, "xmin": xmin, "rollup": rollup.name})
    batches = cur.fetchall()
    low = watermark
    if low is None:
        cur.execute(_FIRST_POINT, (rollup.width,))
        low = cur.fetchone()[0] or new_watermark
    ranges = [(low, new_watermark)]
    if watermark is not None:
        ranges += [(b[2], min(b[3], watermark)) for b in batches if b[2] < watermark]
    return batches, _merge(ranges), new_watermark, new_xmin


def _record(cur: Any, rollup: Rollup, batches: list[Any], new_watermark: Any,
            new_xmin: Any) -> None:
    if batches:
        cur.executemany(
            "INSERT INTO agts.rollup_seen_batches (rollup, batch_id, ingested_at, xid) "
            "VALUES (%s, %s, now(), %s::xid8) ON CONFLICT DO NOTHING",
            [(rollup.name, b[0], b[1]) for b in batches])
    cur.execute("UPDATE agts.rollup_state SET watermark = greatest(watermark, %s), "
                "seen_xmin = greatest(seen_xmin, %s::xid8), refreshed_at = now() WHERE rollup = %s",
                (new_watermark, new_xmin, rollup.name))
    # Batches below the xmin are never candidates again: their seen rows have done their job.
    cur.execute("DELETE FROM agts.rollup_seen_batches WHERE rollup = %s AND xid < %s::xid8",
                (rollup.name, new_xmin))


def refresh(db: Database, *, community: bool) -> dict[str, int]:
    """Bring every rollup up to date; returns the number of ranges materialized per rollup."""
    done: dict[str, int] = {}
    for rollup in ROLLUPS:
        done[rollup.name] = (_refresh_cagg(db, rollup) if community
                             else _refresh_table(db, rollup))
    return done


_COLUMNS = ROLLUP_COLUMNS.split(", ")


def _refresh_table(db: Database, rollup: Rollup) -> int:
    # An upsert per (bucket, series) that has raw points, not a delete of the whole range: rollups
    # outlive the raw points retention drops, and a late point for an archived hour must not take
    # every other series' aggregate of that hour with it.
    upsert = (f"INSERT INTO {rollup.table} (bucket, series_id, {', '.join(_COLUMNS)}) "
              f"SELECT time_bucket(%s, p.time), p.series_id, {PARTIAL_COLUMNS} "
              "FROM agts.metric_points AS p WHERE p.time >= %s AND p.time < %s GROUP BY 1, 2 "
              "ON CONFLICT (series_id, bucket) DO UPDATE SET "
              + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS))
    with db.connection(f"refresh {rollup.table}") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT name FROM agts.locks WHERE name = '{LOCK}' FOR UPDATE")
        batches, ranges, new_watermark, new_xmin = _plan(cur, rollup)
        for low, high in ranges:
            cur.execute(upsert, (rollup.width, low, high))
            log.debug("%s: materialized [%s, %s): %d rows", rollup.name, low, high, cur.rowcount)
        _record(cur, rollup, batches, new_watermark, new_xmin)
    return len(ranges)


def _refresh_cagg(db: Database, rollup: Rollup) -> int:
    # refresh_continuous_aggregate refuses to run in a transaction block: plan and record in
    # transactions, materialize in autocommit between them, all under the lock that a second
    # session holds for the whole refresh.
    with db.exclusive(LOCK, wait=True), db.connection(f"refresh {rollup.table}") as conn:
        conn.commit()
        conn.autocommit = True
        try:
            with conn.transaction(), conn.cursor() as cur:
                batches, ranges, new_watermark, new_xmin = _plan(cur, rollup)
            for low, high in ranges:
                conn.execute("CALL refresh_continuous_aggregate(%s, %s, %s)",
                             (rollup.table, low, high))
            with conn.transaction(), conn.cursor() as cur:
                _record(cur, rollup, batches, new_watermark, new_xmin)
        finally:
            conn.autocommit = False
    return len(ranges)


_STATUS = """
SELECT s.rollup, s.width, s.watermark, s.refreshed_at, now() - s.watermark,
       (SELECT count(*) FROM agts.ingest_batches AS b
        WHERE b.xid >= s.seen_xmin AND b.min_time IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM agts.rollup_seen_batches AS x
                          WHERE x.rollup = s.rollup AND x.batch_id = b.batch_id))
FROM agts.rollup_state AS s ORDER BY s.width
"""


def status(db: Database, *, community: bool) -> pl.DataFrame:
    """One row per rollup: how fresh it is and how much the next refresh has to take in."""
    with db.connection("read the rollup state") as conn:
        rows = conn.execute(_STATUS).fetchall()
    kind = "continuous aggregate" if community else "table"
    return pl.DataFrame(
        [(r[0], r[1], kind, r[2], r[3], r[4], r[5]) for r in rows], orient="row",
        schema={"rollup": pl.String, "width": pl.Duration("us"), "kind": pl.String,
                "watermark": pl.Datetime("us", "UTC"), "refreshed_at": pl.Datetime("us", "UTC"),
                "lag": pl.Duration("us"), "pending_batches": pl.Int64})
