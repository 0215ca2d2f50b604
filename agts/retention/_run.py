"""One retention run: compress (Community), archive and drop expired chunks, per-metric deletes.

The same steps run on both editions; on Community the compression and (when nothing has to be
archived first) retention are also installed as native TimescaleDB jobs, so the database keeps
doing them between runs. Native retention jobs are never installed while
``archive_before_drop`` is on: they would drop chunks the cold tier has not verified.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from agts._args import to_utc
from agts.archive import Archiver, ArchiveStore, ColdTier, TableSpec, chunks, table_specs
from agts.archive._archiver import DROP_LOCK_TIMEOUT_SEC
from agts.archive._tables import METRICS
from agts.config import RetentionConfig
from agts.db._database import Database
from agts.errors import StorageError
from agts.retention._policy import MetricPolicy, TablePolicy, metric_policies, table_policies

__all__ = ["Parts", "RetentionReport", "run_retention"]

log = logging.getLogger(__name__)


@dataclass
class RetentionReport:
    """What :meth:`agts.StorageEngine.run_retention` did (or, with ``dry_run``, would do).

    Attributes
    ----------
    now : datetime
        The reference time; a table's data expires before ``now - days``.
    edition : str
        ``apache`` or ``community``.
    dry_run : bool
        Nothing was changed.
    chunks_compressed, chunks_archived, chunks_dropped : int
        Chunks compressed (Community), written to and verified in the cold tier, dropped.
    rows_archived, rows_dropped, rows_deleted : int
        Rows written to the cold tier; rows removed with dropped chunks; rows deleted by
        per-metric retention.
    bytes_before, bytes_after : int
        Size of the tables retention applies to before and after the run.
    duration_sec : float
        Wall time.
    skipped : list of (str, str)
        What was left alone, with the reason (for example expired chunks kept because no archive
        root is configured while ``archive_before_drop`` is on).
    native_jobs : list of str
        TimescaleDB jobs installed or updated (Community).
    rollups_refreshed : dict of str to int
        Time ranges materialized per rollup by the refresh that runs before metric points are
        dropped or deleted (empty when none expired): the rollups then keep the aggregates of
        what leaves the hot tier.
    """

    now: datetime
    edition: str
    dry_run: bool = False
    chunks_compressed: int = 0
    chunks_archived: int = 0
    chunks_dropped: int = 0
    rows_archived: int = 0
    rows_dropped: int = 0
    rows_deleted: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    duration_sec: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    native_jobs: list[str] = field(default_factory=list)
    rollups_refreshed: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Parts:
    """What a retention run uses: the database, its settings, the cold tier, and what it must do
    to the query side (handed down by the engine, which wires the parts together).

    Attributes
    ----------
    db : Database
    settings : RetentionConfig
    cold : ColdTier
        Where expired chunks are archived (``cold.config.root``; none set: kept, or dropped when
        ``archive_before_drop`` is off).
    refresh_rollups : callable
        Brings the rollups up to date before metric points leave the hot tier.
    forget_cached : callable
        Voids cached query results after drops the cold tier does not record.
    """

    db: Database
    settings: RetentionConfig
    cold: ColdTier
    refresh_rollups: Callable[[], dict[str, int]]
    forget_cached: Callable[[], None]


def run_retention(parts: Parts, *, now: Any = None, dry_run: bool = False) -> RetentionReport:
    """See :meth:`agts.StorageEngine.run_retention`."""
    began = time.perf_counter()
    now_utc = datetime.now(UTC) if now is None else to_utc(now, name="now")
    settings, db, server = parts.settings, parts.db, parts.db.server
    report = RetentionReport(now=now_utc, edition=server.edition, dry_run=dry_run)
    with db.connection("run retention") as conn:
        specs = table_specs(conn)
    policies = table_policies(specs, settings, now_utc)
    report.bytes_before = _bytes(db, [p.spec for p in policies])
    store = parts.cold.store() if parts.cold.config.root else None

    if server.community:
        if not dry_run:
            report.native_jobs = _native_jobs(db, settings, policies)
        _compress(db, policies, now_utc - timedelta(days=settings.compression_after_days),
                  report)
    else:
        report.skipped.append(("compression", "columnstore needs the TimescaleDB Community "
                               f"edition; this server runs {server.edition!r}"))

    metrics = next((p for p in policies if p.spec.name == METRICS), None)
    shorter, longer = metric_policies(settings, now_utc)
    for name in longer:
        report.skipped.append((f"metric {name!r}", (
            f"per_metric_days {settings.per_metric_days[name]} is longer than "
            f"metrics_retention_days {settings.metrics_retention_days}: whole chunks are dropped "
            "at the table's horizon")))
    if metrics is not None and not dry_run and _metrics_expire(db, metrics, shorter):
        # Before points leave the hot tier, so the 1-minute and 1-hour aggregates of every
        # expiring bucket are materialized (rollups are kept past the raw points' retention).
        report.rollups_refreshed = parts.refresh_rollups()
    if metrics is not None:
        for policy in shorter:
            _expire(db, settings, store, metrics.spec, policy.cutoff, report, dry_run=dry_run,
                    start=metrics.cutoff, metric_name=policy.metric_name)
    for table in policies:
        _expire(db, settings, store, table.spec, table.cutoff, report, dry_run=dry_run)

    if report.chunks_dropped or report.rows_deleted:
        # Archived drops void cached frames through the cold tier's units; drops without an
        # archive leave no such trace, so at least this engine forgets what it cached.
        parts.forget_cached()
    report.bytes_after = _bytes(db, [p.spec for p in policies])
    report.duration_sec = time.perf_counter() - began
    log.info("retention run: %s", report)
    return report


def _metrics_expire(db: Database, metrics: TablePolicy, shorter: list[MetricPolicy]) -> bool:
    """Whether metric points expire in this run (whole chunks or a shorter per-metric policy)."""
    with db.connection("run retention") as conn:
        if chunks(conn, metrics.spec, end=metrics.cutoff):
            return True
        return any(chunks(conn, metrics.spec, start=metrics.cutoff, end=p.cutoff)
                   for p in shorter)


def _expire(
    db: Database, settings: RetentionConfig, store: ArchiveStore | None, spec: TableSpec,
    cutoff: datetime, report: RetentionReport, *, dry_run: bool, start: datetime | None = None,
    metric_name: str | None = None,
) -> None:
    what = spec.name if metric_name is None else f"metric {metric_name!r}"
    with db.connection("run retention") as conn:
        expired = chunks(conn, spec, start=start, end=cutoff)
    if not expired:
        return
    archive_first = settings.archive_before_drop
    if archive_first and store is None:
        report.skipped.append((what, (
            f"{len(expired)} expired chunk(s) kept: retention.archive_before_drop is on and no "
            "archive.root is configured")))
        return
    if dry_run:
        if archive_first:
            report.chunks_archived += len(expired)
        if metric_name is None:
            report.chunks_dropped += len(expired)
        return
    if archive_first:
        assert store is not None
        result = Archiver(db, store, spec).run(start, cutoff, drop=True, metric_name=metric_name)
        report.chunks_archived += result.units_verified
        report.rows_archived += result.rows_exported
        if metric_name is None:
            report.chunks_dropped += result.units_dropped
            report.rows_dropped += result.rows_dropped
        else:
            report.rows_deleted += result.rows_dropped
        report.skipped.extend(result.skipped)
        report.skipped.extend((what, f"failed: {why}") for what, why in result.failed)
        return
    with db.connection("run retention") as conn:
        if metric_name is None:
            rows = conn.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE {} < %s").format(
                    spec.identifier, sql.Identifier(spec.time_column)),
                [max(c.range_end for c in expired)]).fetchone()
            # As in an archive run: a session holding a chunk does not queue everyone behind us.
            conn.execute(f"SET LOCAL lock_timeout = {int(DROP_LOCK_TIMEOUT_SEC * 1000)}")
            try:
                dropped = conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s)",
                                       [spec.qualified, cutoff]).fetchall()
            except psycopg.errors.LockNotAvailable:
                conn.rollback()
                report.skipped.append((what, (
                    f"{len(expired)} expired chunk(s) kept: another session held one for more "
                    f"than {DROP_LOCK_TIMEOUT_SEC:g}s; the next run drops them")))
                return
            report.chunks_dropped += len(dropped)
            report.rows_dropped += int(rows[0]) if rows else 0
            if spec.name == METRICS:
                _recompute_latest(conn, expired[0].range_start, cutoff)
        else:
            cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(
                spec.identifier, spec.where(expired[0].range_start, expired[-1].range_end,
                                            metric_name)))
            report.rows_deleted += max(cur.rowcount, 0)
            _recompute_latest(conn, expired[0].range_start, expired[-1].range_end, metric_name)


def _recompute_latest(conn: Any, start: datetime, end: datetime,
                      metric_name: str | None = None) -> None:
    """Points of ``[start, end)`` deleted without an archive are gone from every tier: series
    whose newest (or oldest) point was among them get the newest (oldest) hot one left, or lose
    their row."""
    touched = [r[0] for r in conn.execute(
        "SELECT l.series_id FROM agts.series_latest AS l WHERE "
        "((l.time >= %s AND l.time < %s) OR (l.first_time >= %s AND l.first_time < %s)) AND "
        "(%s::text IS NULL OR l.series_id IN (SELECT series_id FROM agts.series "
        "WHERE metric_name = %s::text))",
        [start, end, start, end, metric_name, metric_name]).fetchall()]
    if not touched:
        return
    conn.execute(
        """
        UPDATE agts.series_latest AS l SET first_time = f.time, time = p.time, value = p.value
        FROM unnest(%s::int[]) AS g(id)
        CROSS JOIN LATERAL (SELECT m.time, m.value FROM agts.metric_points AS m
                            WHERE m.series_id = g.id ORDER BY m.time DESC LIMIT 1) AS p
        CROSS JOIN LATERAL (SELECT m.time FROM agts.metric_points AS m
                            WHERE m.series_id = g.id ORDER BY m.time LIMIT 1) AS f
        WHERE l.series_id = g.id
        """, [touched])
    conn.execute(  # no hot point left: none anywhere
        "DELETE FROM agts.series_latest AS l WHERE l.series_id = ANY(%s::int[]) AND NOT EXISTS "
        "(SELECT 1 FROM agts.metric_points AS m WHERE m.series_id = l.series_id)", [touched])


def _compress(db: Database, policies: list[TablePolicy], before: datetime,
              report: RetentionReport) -> None:
    for policy in policies:
        if not policy.spec.compression_enabled:
            continue
        with db.connection("run retention") as conn:
            todo = [c for c in chunks(conn, policy.spec, end=before) if not c.is_compressed]
        for chunk in todo:
            if report.dry_run:
                report.chunks_compressed += 1
                continue
            try:
                with db.connection("run retention") as conn:
                    conn.execute("SELECT compress_chunk(%s::regclass, if_not_compressed => true)",
                                 [f"{chunk.schema}.{chunk.name}"])
            except StorageError as exc:
                # Database.connection translates driver errors: the native compression job got
                # there first ("chunk ... is already compressed", despite if_not_compressed when
                # both run at the same moment).
                if isinstance(exc.__cause__, psycopg.errors.DuplicateObject):
                    continue
                raise
            report.chunks_compressed += 1


def _native_jobs(db: Database, settings: RetentionConfig,
                 policies: list[TablePolicy]) -> list[str]:
    """Install or update the Community edition's compression (and, when allowed, retention) jobs."""
    done = []
    with db.connection("run retention") as conn:
        for policy in policies:
            table = policy.spec.qualified
            if policy.spec.compression_enabled:
                after = f"{settings.compression_after_days} days"
                if not _job_matches(conn, policy.spec, "policy_compression", "compress_after", after):
                    conn.execute("SELECT remove_compression_policy(%s::regclass, if_exists => true)",
                                 [table])
                    conn.execute("SELECT add_compression_policy(%s::regclass, %s::interval)",
                                 [table, after])
                    done.append(f"compression policy on {table}: after {after}")
            if settings.archive_before_drop:
                conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)",
                             [table])
                continue
            keep = f"{policy.days} days"
            if not _job_matches(conn, policy.spec, "policy_retention", "drop_after", keep):
                conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)",
                             [table])
                conn.execute("SELECT add_retention_policy(%s::regclass, %s::interval)",
                             [table, keep])
                done.append(f"retention policy on {table}: drop after {keep}")
    return done


def _job_matches(conn: Any, spec: TableSpec, proc: str, key: str, interval: str) -> bool:
    row = conn.execute(
        """
        SELECT (config ->> %s)::interval = %s::interval FROM timescaledb_information.jobs
        WHERE proc_name = %s AND hypertable_schema = %s AND hypertable_name = %s
        """, [key, interval, proc, spec.schema, spec.table]).fetchone()
    return bool(row and row[0])


def _bytes(db: Database, specs: list[TableSpec]) -> int:
    if not specs:
        return 0
    with db.connection("run retention") as conn:
        row = conn.execute(
            "SELECT coalesce(sum(hypertable_size(format('%%I.%%I', s, t)::regclass)), 0) "
            "FROM unnest(%s::text[], %s::text[]) AS x(s, t)",
            [[s.schema for s in specs], [s.table for s in specs]]).fetchone()
    return int(row[0]) if row else 0
