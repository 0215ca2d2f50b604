"""StorageEngine: the entry point that owns the connections and hands out the other parts."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

import polars as pl

from agts.config import StorageConfig
from agts.db._database import Database, ServerInfo
from agts.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    import duckdb

    from agts._aio import AsyncView
    from agts._migrations import MigrationStep
    from agts.archive import ArchiveReport, ColdTier
    from agts.ingest import Ingestor, IngestResult, MetricPoint, MetricsWriter
    from agts.query import MetricsQueries
    from agts.retention import RetentionReport

__all__ = ["StorageEngine", "connect"]

log = logging.getLogger(__name__)


class StorageEngine:
    """Metrics, execution history and archives in one TimescaleDB database.

    Build it with :func:`agts.connect`. It owns one psycopg pool and a few ADBC connections;
    close it (or use it in a ``with`` block) when done.

    Parameters
    ----------
    config
        The settings; see :class:`agts.StorageConfig`.
    """

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.db = Database(config.database)
        log.info(
            "connected to %s (PostgreSQL %s, TimescaleDB %s, %s edition)",
            config.database.describe(), self.server.postgres_version,
            self.server.timescaledb_version, self.server.edition,
        )

    def __repr__(self) -> str:
        return f"StorageEngine({self.config.database.describe()}, edition={self.server.edition!r})"

    def __enter__(self) -> StorageEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Flush what is pending and close every connection. Safe to call twice."""
        for ingestor in list(self.__dict__.get("_ingestors_", ())):
            ingestor.close()
        self.db.close()

    @property
    def aio(self) -> AsyncView[StorageEngine]:
        """This engine for asyncio: ``await engine.aio.query_metrics(...)``, any public method,
        run in a worker thread so the event loop never blocks, at most
        ``database.max_connections`` at a time per loop (see :class:`agts.AsyncView`)."""
        view = self.__dict__.get("_aio_")
        if view is None:
            from agts._aio import AsyncView

            limit = self.config.database.max_connections
            view = self.__dict__["_aio_"] = AsyncView(self, limit=limit)
        return view

    @property
    def server(self) -> ServerInfo:
        """The server's versions and TimescaleDB edition, read at connect time."""
        return self.db.server

    # -- schema ------------------------------------------------------------------------------

    def migrate(self, target: int | None = None, *,
                directory: str | Path | None = None) -> list[MigrationStep]:
        """Apply pending migrations (to ``target``, default the latest). Idempotent.

        Returns
        -------
        list of MigrationStep
            What was applied (empty when nothing was pending), each with the edition-specific
            parts it skipped.

        Raises
        ------
        MigrationError
            A step failed (it was rolled back whole) or a stored checksum does not match.
        """
        from agts._migrations import MigrationRunner

        runner = MigrationRunner(self.db, directory=Path(directory) if directory else None)
        return runner.up(target)

    # -- metrics ingest ----------------------------------------------------------------------

    def _metrics_writer(self) -> MetricsWriter:
        writer = self.__dict__.get("_metrics_writer_")
        if writer is None:
            from agts.ingest import MetricsWriter

            writer = MetricsWriter(self.db, chunk_interval=self.config.ingestion.chunk_interval)
            self.__dict__["_metrics_writer_"] = writer
        return writer

    def insert_metric(self, point: MetricPoint) -> IngestResult:
        """Store one metric point (a batch of one; prefer batches or :meth:`ingestor`).

        Raises
        ------
        ValidationError
            The point is invalid (see :meth:`insert_metrics_batch`).
        """
        from agts.ingest import insert_batch

        return insert_batch(self._metrics_writer(), [point])

    def insert_metrics_batch(
        self, data: Any, *, on_error: Literal["raise", "skip"] = "raise",
        batch_id: str | uuid.UUID | None = None,
    ) -> IngestResult:
        """Validate and store metric points, exactly once per (series, timestamp).

        Parameters
        ----------
        data
            A Polars or pandas DataFrame, a pyarrow Table, RecordBatch or RecordBatchReader with
            columns ``timestamp``, ``metric_name``, ``value`` and optionally ``labels`` (dicts as a
            struct or map column, or JSON text), or a list of :class:`agts.MetricPoint`.
        on_error
            ``"raise"``: refuse the whole batch at the first invalid row. ``"skip"``: store the
            valid rows and return the others in ``IngestResult.skipped``.
        batch_id
            An id for this batch (uuid). Sending the same id again is a no-op, so a retry after a
            timeout or a lost acknowledgement cannot store anything twice. Default: a new id.

        Returns
        -------
        IngestResult
            Rows written, duplicates ignored, rows skipped.

        Raises
        ------
        ValidationError
            Missing columns, wrong types, or (``on_error="raise"``) a null or empty metric name,
            a null, NaN or infinite value, a timestamp outside 0002-01-01 to 9998-12-31 UTC,
            or an invalid or oversize label set; names the column and the first offending row.
        ConnectError
            The database is unreachable (nothing was stored; retry with the same ``batch_id``).
        """
        from agts.ingest import insert_batch

        return insert_batch(self._metrics_writer(), data, on_error=on_error, batch_id=batch_id)

    def ingestor(
        self, *, batch_size: int | None = None, flush_interval_ms: int | None = None,
        max_buffer_size: int | None = None,
        backpressure: Literal["block", "raise", "drop_oldest"] | None = None,
        backpressure_timeout_sec: float | None = None, spool_dir: str | Path | None = None,
        spool_max_bytes: int | None = None, on_error: Literal["raise", "skip"] = "raise",
    ) -> Ingestor:
        """A buffered ingest pipeline writing to this engine; options default to ``ingestion.*``.

        See :class:`agts.Ingestor`. Close it (or use ``with``/``async with``) to flush; the
        engine closes the ingestors it handed out when it closes.

        Raises
        ------
        ValidationError
            An invalid option.
        StorageError
            The spool directory cannot be used or is in use by another ingestor.
        """
        from agts.ingest import Ingestor, default_spool_dir

        given = {
            "batch_size": batch_size, "flush_interval_ms": flush_interval_ms,
            "max_buffer_size": max_buffer_size, "backpressure": backpressure,
            "backpressure_timeout_sec": backpressure_timeout_sec,
            "spool_dir": str(spool_dir) if spool_dir is not None else None,
            "spool_max_bytes": spool_max_bytes,
        }
        try:
            settings = self.config.with_overrides(
                ingestion={k: v for k, v in given.items() if v is not None}).ingestion
        except ConfigError as exc:  # an argument of this call, not the configuration's
            raise ValidationError(str(exc)) from None
        directory = settings.spool_dir or str(default_spool_dir(self.config.database))
        ingestor = Ingestor(self._metrics_writer(), settings, spool_dir=directory,
                            on_error=on_error)
        self.__dict__.setdefault("_ingestors_", weakref.WeakSet()).add(ingestor)
        return ingestor

    # -- queries -----------------------------------------------------------------------------

    def _queries(self) -> MetricsQueries:
        queries = self.__dict__.get("_queries_")
        if queries is None:
            from agts.query import MetricsQueries

            queries = MetricsQueries(self.db, self.config.query, community=self.server.community,
                                     cold=self.cold_tier)
            self.__dict__["_queries_"] = queries
        return queries

    @overload
    def query_metrics(
        self, metric_name: str, start: Any, end: Any, labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None, limit: int | None = None,
        after: str | None = None, iter_batches: Literal[False] = False, batch_size: int = 100_000,
        tiers: Literal["hot", "cold", "all"] = "hot",
    ) -> pl.DataFrame: ...

    @overload
    def query_metrics(
        self, metric_name: str, start: Any, end: Any, labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None, limit: int | None = None,
        after: str | None = None, iter_batches: Literal[True], batch_size: int = 100_000,
        tiers: Literal["hot", "cold", "all"] = "hot",
    ) -> Iterator[pl.DataFrame]: ...

    def query_metrics(
        self, metric_name: str, start: Any, end: Any, labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None, limit: int | None = None,
        after: str | None = None, iter_batches: bool = False, batch_size: int = 100_000,
        tiers: Literal["hot", "cold", "all"] = "hot",
    ) -> pl.DataFrame | Iterator[pl.DataFrame]:
        """The points of one metric in ``[start, end)``, oldest first.

        Parameters
        ----------
        metric_name
            The metric (any text; it is always a bound parameter, never SQL).
        start, end
            The half-open range ``start <= timestamp < end``: datetimes or ISO 8601 strings;
            naive values are taken to be UTC.
        labels
            Exact-match filters on the given keys: ``{"venue": "binance"}`` matches every series
            whose labels include that pair (other keys may be present).
        labels_in
            Set filters: ``{"venue": ["binance", "okx"]}``.
        limit, after
            Keyset pagination for services: at most ``limit`` rows after the cursor ``after``
            (from :func:`agts.next_cursor` of the previous page).
        iter_batches
            Return an iterator of frames of at most ``batch_size`` rows instead (bounded memory;
            keyset pages under the hood).
        tiers
            ``"hot"`` (default): TimescaleDB only. ``"cold"``: only the rows archived and dropped
            from TimescaleDB (:meth:`query_cold`). ``"all"``: both, every row once, in one frame
            of the same columns, dtypes and order. ``limit``/``after`` work with every value;
            ``iter_batches=True`` needs ``"hot"``.

        Returns
        -------
        pl.DataFrame
            ``timestamp`` (``Datetime("us", "UTC")``), ``metric_name``, ``value`` (Float64),
            ``labels`` (a struct with one String field per label key in the result, sorted; null
            where a series lacks the key) and ``series_id``; ordered by (timestamp, series_id).

        Raises
        ------
        ValidationError
            An invalid argument (before any database work).
        ResultTooLargeError
            More than ``query.max_results`` rows and no ``limit``: page or stream instead.
        """
        return self._queries().raw(metric_name, start, end, labels, labels_in=labels_in,
                                   limit=limit, after=after, iter_batches=iter_batches,
                                   batch_size=batch_size, tiers=tiers)

    def query_aggregated(
        self, metric_name: str, start: Any, end: Any, bucket: str | timedelta,
        aggregation: str | Sequence[str], labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None,
        group_by: Sequence[str] | None = None, fill: Literal["null", "forward"] | None = None,
        tiers: Literal["hot", "cold", "all"] = "hot",
    ) -> pl.DataFrame:
        """One row per time bucket (and label group) with one column per aggregation.

        Parameters
        ----------
        metric_name, start, end, labels, labels_in
            As in :meth:`query_metrics` (half-open ``[start, end)``).
        bucket
            The bucket width: a ``timedelta`` or ``"15s"``, ``"1m"``, ``"1h"``, ``"1d"`` (units us,
            ms, s, m, h, d, w). Buckets are aligned to the Unix epoch in UTC and labelled by start.
        aggregation
            One or several of ``avg``, ``min``, ``max``, ``sum``, ``count``, ``first``, ``last``,
            ``stddev`` (sample), ``median`` and percentiles ``p50``, ``p99``, ``p99.9`` ... .
        group_by
            Label keys: one row per bucket and combination of their values (null where a series
            lacks the key); the keys become String columns.
        fill
            ``"null"``: add empty buckets with null aggregates (``count`` 0); ``"forward"``: carry
            the previous bucket's values into empty buckets.
        tiers
            As in :meth:`query_metrics`. With ``"all"``, the buckets the cold tier touches are
            aggregated in Polars from the raw rows of both tiers (same definitions, percentiles
            included); the other buckets go through the hot query.

        Returns
        -------
        pl.DataFrame
            ``timestamp``, the ``group_by`` columns, then the aggregations (``count`` Int64, the
            others Float64), ordered by bucket and group.

        Notes
        -----
        Buckets a rollup can answer exactly (aggregations other than percentiles, a bucket that
        is a multiple of 1 minute or 1 hour, ``start``/``end`` on its edges) are read from the
        rollup; what it does not hold yet comes from raw points, so results equal the raw
        computation up to floating-point rounding.
        """
        return self._queries().aggregated(metric_name, start, end, bucket, aggregation, labels,
                                          labels_in=labels_in, group_by=group_by, fill=fill,
                                          tiers=tiers)

    def query_metrics_multi(
        self, metric_names: Sequence[str], start: Any, end: Any,
        labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None,
        shape: Literal["long", "wide"] = "long", bucket: str | timedelta | None = None,
        aggregation: str | Sequence[str] = "avg", group_by: Sequence[str] | None = None,
        fill: Literal["null", "forward"] | None = None,
        tiers: Literal["hot", "cold", "all"] = "hot",
    ) -> pl.DataFrame:
        """Several metrics in one frame, from one SQL statement.

        Parameters
        ----------
        metric_names
            The metrics, in the order their columns (``shape="wide"``) or rows (ties) come.
        start, end, labels, labels_in, tiers
            As in :meth:`query_metrics`; the label filters apply to every metric's series.
        shape
            ``"long"``: one row per (bucket, metric, group) with a ``metric_name`` column; without
            ``bucket``, the rows of :meth:`query_metrics` for every metric. ``"wide"``: one row
            per bucket (and group) with one column per metric (named after it; with several
            aggregations ``<metric>_<aggregation>``), null where a metric has no value; without
            ``bucket``, one column per metric of raw points aligned on time (one series per
            metric).
        bucket, aggregation, fill
            As in :meth:`query_aggregated`; the rollups answer where they are exact.
        group_by
            Label keys: one row per bucket and combination of their values, across all metrics
            (``[..., group_by=["hostname"]]`` gives every host's every metric per bucket); a
            series without a key falls in that key's null group.

        Returns
        -------
        pl.DataFrame
            Long: ``timestamp``, ``metric_name``, the ``group_by`` columns, the aggregations.
            Wide: ``timestamp``, the ``group_by`` columns, the metric columns. Ordered by bucket,
            group and (long) the order of ``metric_names``.
        """
        return self._queries().multi(metric_names, start, end, labels, labels_in=labels_in,
                                     shape=shape, bucket=bucket, aggregation=aggregation,
                                     group_by=group_by, fill=fill, tiers=tiers)

    def latest(
        self, metric_name: str | Sequence[str], labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None, before: Any = None,
    ) -> pl.DataFrame:
        """The newest point of every series of ``metric_name`` (one name or several) whose labels
        match: what a dashboard tile or a risk check asks first.

        Parameters
        ----------
        metric_name
            A metric, or a list of them.
        labels, labels_in
            As in :meth:`query_metrics`.
        before
            The newest point at or before this time instead (any time form, see
            :meth:`query_metrics`).

        Returns
        -------
        pl.DataFrame
            One row per series that has a point: ``timestamp``, ``metric_name``, ``value``,
            ``labels`` (struct) and ``series_id``, ordered by series id — the columns and dtypes
            of :meth:`query_metrics`.

        Notes
        -----
        Without ``before`` it reads one row per series from a table ingest keeps up to date in
        each batch's transaction (``agts.series_latest``): the newest point stored through agts,
        also once archived; a late or out-of-order point never replaces a newer one, and at the
        same instant the first write wins. With ``before`` it probes the ``(series_id, time)``
        index once per series, and reads the cold tier for series with no hot point that early.
        """
        return self._queries().latest(metric_name, labels, labels_in=labels_in, before=before)

    # -- discovery -----------------------------------------------------------------------------

    def metric_names(self) -> pl.DataFrame:
        """Every metric stored: ``metric_name``, ``series`` (how many label sets),
        ``first_timestamp``, ``last_timestamp`` and ``points_estimate``, by name."""
        return self._queries().metric_names()

    def series(
        self, metric_name: str | Sequence[str], labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None,
    ) -> pl.DataFrame:
        """The series of ``metric_name`` (one or several) whose labels match: ``series_id``,
        ``metric_name``, ``labels`` (struct), ``first_timestamp``, ``last_timestamp`` (oldest
        and newest point, also archived) and ``points_estimate`` (points ingested; a batch
        merged with stored points counts its repeats too), by series id."""
        return self._queries().series(metric_name, labels, labels_in=labels_in)

    def label_keys(self, metric_name: str | Sequence[str] | None = None) -> pl.DataFrame:
        """The label keys in use (of ``metric_name``'s series, or of all): ``key``, ``series``
        (how many series have it) and ``metrics``, by key."""
        return self._queries().label_keys(metric_name)

    def label_values(
        self, key: str, metric_name: str | Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None, *,
        labels_in: Mapping[str, Sequence[str]] | None = None,
    ) -> pl.DataFrame:
        """The values label ``key`` takes among the series of ``metric_name`` (or all) that
        match ``labels`` / ``labels_in``: ``value`` and ``series``, by value. For dashboards'
        filter menus: ``label_values("venue", "latency_ms", {"region": "eu"})``."""
        return self._queries().label_values(key, metric_name, labels, labels_in=labels_in)

    def refresh_rollups(self) -> dict[str, int]:
        """Bring the 1-minute and 1-hour rollups up to date (incrementally: from the watermark,
        plus the buckets of late-arriving ingest batches). Returns the number of time ranges
        materialized per rollup. Queries are exact without it; it only makes them faster."""
        return self._queries().refresh_rollups()

    def rollup_status(self) -> pl.DataFrame:
        """How fresh the rollups are: one row per rollup with ``rollup``, ``width``, ``kind``
        (``table`` on the Apache edition, ``continuous aggregate`` on Community), ``watermark``
        (buckets before it are materialized), ``refreshed_at``, ``lag`` (now - watermark) and
        ``pending_batches`` (ingest batches the next refresh still has to take in).

        A growing lag on the Apache edition means nothing schedules :meth:`refresh_rollups`:
        run ``agts rollups refresh --every 1m`` (or from cron). Queries stay exact either way;
        only their speed depends on it.
        """
        return self._queries().rollup_status()

    def query_stats(self) -> pl.DataFrame:
        """Query statistics since connect: per kind (``raw``, ``aggregated``, ``multi``,
        ``stream``, ``refresh_rollups``) the queries, rows, latency (mean/p50/p95/max ms) and cache
        hits, misses and hit rate."""
        return self._queries().stats.frame()

    def clear_query_cache(self) -> None:
        """Forget every cached query result."""
        self._queries().cache.clear()

    # -- read replicas -------------------------------------------------------------------------

    def replica_status(self) -> pl.DataFrame:
        """Every replica of ``database.replicas``, checked now: ``replica``
        (``user@host:port/database``), ``state`` (``ok``, ``lagging``, ``down``, ``not a
        replica``), ``lag_sec`` (an upper bound; null when unknown), ``replay_lsn``,
        ``checked_at`` and ``error``. No rows without replicas.

        Queries of metrics (raw, aggregated, several, latest, discovery) and of execution history
        (``query_*``) read a replica whose lag is within ``database.replica_max_lag_sec``, chosen
        by ``database.replica_choice``, and fall back to the primary when none is fit or one fails
        mid-read. Writes, migrations, retention, archive, rollup refreshes, ``order_state`` and
        ``order_history`` use the primary; so do reads inside :meth:`reads_on_primary`.
        """
        states = self.db.replica_status()
        return pl.DataFrame(
            [{"replica": r.replica, "state": r.state, "lag_sec": r.lag_sec,
              "replay_lsn": r.replay_lsn, "checked_at": r.checked_at, "error": r.error}
             for r in states],
            schema={"replica": pl.String, "state": pl.String, "lag_sec": pl.Float64,
                    "replay_lsn": pl.String, "checked_at": pl.Datetime("us", "UTC"),
                    "error": pl.String})

    def reads_on_primary(self) -> contextlib.AbstractContextManager[None]:
        """A block whose queries read the primary, to see one's own writes at once::

            engine.insert_metrics_batch(points)
            with engine.reads_on_primary():
                engine.latest("pnl")
        """
        return self.db.on_primary()

    # -- retention and archive ---------------------------------------------------------------

    def archive(
        self, table: str, start: Any = None, end: Any = None, *, drop: bool = False,
        root: str | None = None, row_group_rows: int | None = None,
    ) -> ArchiveReport:
        """Export whole chunks of ``table`` inside ``[start, end)`` to the Parquet cold tier.

        Each chunk range is exported, verified (files re-read: sha256 and row counts, and the
        total compared with the hot tier) and, with ``drop=True``, only then dropped from the hot
        tier. Safe to re-run after a crash at any step: nothing is lost or stored twice.

        Parameters
        ----------
        table
            ``metrics`` (metric points, exported as ``timestamp, metric_name, value, labels``),
            ``orders``, ``fills``, ... or any hypertable of schema ``agts``.
        start, end
            Datetimes or ISO 8601 strings (naive = UTC); chunks lying entirely inside are taken.
            Default: from the oldest chunk up to now (closed chunks only).
        drop
            Remove the verified chunks from the hot tier. For ``metrics`` the rollups are
            refreshed first (as :meth:`run_retention` does), so the 1-minute and 1-hour
            aggregates of the dropped range stay complete.
        root
            Archive root (a directory or ``s3://bucket/prefix``); default ``archive.root``.
        row_group_rows
            Rows per Parquet row group; default 32,768 for metric points (sorted by series, so
            one series' hour is one group a reader decodes alone), 1,000,000 for other tables.

        Raises
        ------
        ConfigError
            No archive root, an unknown table or an invalid argument.
        """
        if drop and table in ("metrics", "metric_points"):
            self.refresh_rollups()
        return self.cold_tier.archive(table, start, end, drop=drop, root=root,
                                      row_group_rows=row_group_rows)

    def export_cold(
        self, table: str, start: Any = None, end: Any = None, *, root: str | None = None,
        row_group_rows: int | None = None,
    ) -> ArchiveReport:
        """Copy whole chunks to the cold tier without dropping them: :meth:`archive` with
        ``drop=False``."""
        return self.archive(table, start, end, drop=False, root=root, row_group_rows=row_group_rows)

    def restore(self, table: str, start: Any, end: Any, *, root: str | None = None) -> int:
        """Bring the archived (dropped) chunk ranges of ``table`` overlapping ``[start, end)``
        back into the hot tier. Idempotent (rows already present are kept once); metric points
        get their series back through ``agts.series``. Returns the rows inserted.

        The restored ranges are archived units again (state ``verified``): the next retention run
        drops them again unless the policy changed.
        """
        return self.cold_tier.restore(table, start, end, root=root)

    def cold(self, *, root: str | None = None, as_of: Any = None) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection with one view per archived table (``metrics``, ``orders``, ...),
        over the data files of the table's current Iceberg snapshot: every archived range once
        (also ranges still in the hot tier), nothing half-written.

        Local archives are read with ``read_parquet``; S3 archives through pyarrow datasets
        (DuckDB's httpfs is not needed). Close it when done.

        Parameters
        ----------
        as_of
            A snapshot id (:meth:`cold_snapshots`) or an aware datetime: the archive as it was
            then, for a backtest that must see the same history when it is run again.
        """
        return self.cold_tier.duckdb(root, as_of)

    def scan_cold(self, table: str, *, root: str | None = None, as_of: Any = None
                  ) -> pl.LazyFrame:
        """A Polars ``LazyFrame`` over the data files of ``table``'s current Iceberg snapshot (or
        of the one ``as_of`` names, as in :meth:`cold`)."""
        return self.cold_tier.scan(table, root, as_of)

    def cold_snapshots(self, table: str, *, root: str | None = None) -> pl.DataFrame:
        """The Iceberg snapshots of ``table``'s cold tier, oldest first: ``snapshot_id,
        committed_at, operation, files, rows`` (what ``as_of`` accepts)."""
        snaps = self.cold_tier.snapshots(table, root)
        return pl.DataFrame([s.__dict__ for s in snaps], schema={
            "snapshot_id": pl.Int64, "committed_at": pl.Datetime("us", "UTC"),
            "operation": pl.String, "files": pl.Int64, "rows": pl.Int64})

    def upgrade_cold(self, table: str | None = None) -> pl.DataFrame:
        """Register every archived file of ``table`` (default: every table) in its Iceberg table,
        without rewriting data: archives written before the cold tier was on Iceberg (schema
        version 1: no ``series_id``, which then reads as null) become readable by
        :meth:`cold`, :meth:`scan_cold` and other engines. Each file is checked against its
        manifest row (size, sha256, row count) first. Idempotent: a table that already holds
        its files gets no new snapshot.

        Returns
        -------
        polars.DataFrame
            One row per table: ``table_name, files, rows, snapshot_id``.

        Raises
        ------
        ArchiveError
            A file is missing or not the one recorded (nothing of that table is registered).
        """
        return self.cold_tier.upgrade(table)

    def iceberg_table(self, table: str, *, root: str | None = None) -> Any:
        """The pyiceberg ``Table`` of ``table``'s cold tier (for ``pl.scan_iceberg`` or pyiceberg's
        own scans), or None when nothing of it was archived."""
        with self.cold_tier.iceberg(root) as catalog:
            return catalog.table(self.cold_tier.spec(table).name)

    def query_cold(
        self, table: str, start: Any, end: Any, *, metric_name: str | None = None,
        root: str | None = None,
    ) -> pl.DataFrame:
        """The rows of ``table`` in ``[start, end)`` that live only in the cold tier.

        Exactly the complement of the hot tier: rows of chunk ranges that were dropped after
        archiving (and, for ``metrics``, rows removed by per-metric retention). Concatenated with
        a hot query over the same range it gives every row once, with no gap and no overlap.
        """
        return self.cold_tier.query(table, start, end, metric_name=metric_name, root=root)

    def verify_cold(self, table: str | None = None) -> pl.DataFrame:
        """Read back every archived file of ``table`` (default: every table) and check it against
        its manifest row: present, the recorded size and sha256, a Parquet file with the recorded
        row count.

        Returns
        -------
        polars.DataFrame
            One row per file: ``table_name, root, path, state, rows, bytes, problem`` (null when
            the file is the one recorded; otherwise what is wrong, naming the file).

        Raises
        ------
        ArchiveError
            A root cannot be listed or read at all.
        """
        return self.cold_tier.verify(table)

    def run_retention(self, *, now: Any = None, dry_run: bool = False) -> RetentionReport:
        """Apply ``retention.*``: compress old chunks (Community), archive and drop expired ones.

        With ``retention.archive_before_drop`` (the default) nothing is dropped that the cold tier
        (``archive.root``) has not written and verified; with no archive root, expired chunks are
        kept and listed in ``skipped``. On the Apache edition run it from cron
        (``agts retention run``) or as a service (``agts retention run --every 1h``).

        Parameters
        ----------
        now
            The reference time (default: the current time); expiry is ``now - days``.
        dry_run
            Report what would be done without changing anything.
        """
        from agts.retention import Parts, run_retention

        parts = Parts(db=self.db, settings=self.config.retention, cold=self.cold_tier,
                      refresh_rollups=self.refresh_rollups, forget_cached=self.clear_query_cache)
        return run_retention(parts, now=now, dry_run=dry_run)

    def storage_report(
        self, *, by: Literal["table", "chunk"] = "table", growth_days: int = 7,
    ) -> pl.DataFrame:
        """Storage per table (hot, warm = compressed, cold = archived bytes, compression ratio,
        growth per day over the last ``growth_days`` days, 30-day projection, steady state under
        retention) or per chunk and archive unit (``by="chunk"``)."""
        from agts.retention import storage_report

        return storage_report(self.db, self.config.retention, by=by, growth_days=growth_days)

    @property
    def cold_tier(self) -> ColdTier:
        """The cold tier of this database (archive, restore, read back); the engine's parts
        share it."""
        cold = self.__dict__.get("_cold_tier_")
        if cold is None:
            from agts.archive import ColdTier

            cold = ColdTier(self.db, self.config.archive)
            self.__dict__["_cold_tier_"] = cold
        return cold


def connect(
    dsn_or_config: str | StorageConfig | os.PathLike[str] | None = None,
    *,
    migrate: bool = False,
) -> StorageEngine:
    """Connect to TimescaleDB and return a :class:`StorageEngine`.

    Parameters
    ----------
    dsn_or_config
        A libpq connection string or URI, a :class:`StorageConfig`, a path to a YAML config file,
        or None: the config file named by ``$AGTS_CONFIG`` (or ``./agts.yaml``), environment
        variables, and otherwise the local default database of ``agts local start``.
    migrate
        Apply pending migrations before returning.

    Raises
    ------
    ConnectError
        The database cannot be reached within ``database.connection_timeout_sec``; the message names
        host and port, never the password.
    ConfigError
        The configuration is invalid.

    Examples
    --------
    >>> with agts.connect() as engine:                     # doctest: +SKIP
    ...     engine.migrate()
    """
    if dsn_or_config is None:
        config = StorageConfig.load()
    elif isinstance(dsn_or_config, StorageConfig):
        config = dsn_or_config
    elif isinstance(dsn_or_config, os.PathLike) or (
        isinstance(dsn_or_config, str) and dsn_or_config.endswith((".yaml", ".yml"))
    ):
        config = StorageConfig.load(dsn_or_config)
    elif isinstance(dsn_or_config, str):
        config = StorageConfig.from_dsn(dsn_or_config)
    else:
        raise ValidationError(
            "connect() takes a DSN string, a StorageConfig, a YAML path or None, "
            f"got {type(dsn_or_config).__name__}"
        )
    engine = StorageEngine(config)
    if migrate:
        try:
            engine.migrate()
        except BaseException:
            engine.close()
            raise
    return engine
