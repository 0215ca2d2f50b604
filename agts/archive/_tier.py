"""The cold tier as its users hold it: one object for archiving, restoring and reading back.

:class:`ColdTier` takes the parts it uses (the database and the ``archive`` section of the
configuration) and knows nothing of the engine, the query service or the execution store: they
hold a ``ColdTier`` and ask it for files and rows.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from agts._args import check_positive_int, check_range, optional_utc
from agts.archive._archiver import Archiver, ArchiveReport
from agts.archive._cold import cold_files, duckdb_connection, read_cold, read_series, scan, units_overlap
from agts.archive._iceberg import IcebergCatalog, SnapshotInfo, SnapshotRef
from agts.archive._restore import restore
from agts.archive._store import ArchiveStore
from agts.archive._tables import METRICS, TableSpec, resolve
from agts.config import ArchiveConfig
from agts.db._database import Database
from agts.errors import ArchiveError, ValidationError

__all__ = ["ColdTier"]

log = logging.getLogger(__name__)

_ANY_DROPPED = """
SELECT 1 FROM agts.archive_units WHERE table_name = %s AND state = 'dropped'
  AND range_start < %s AND range_end > %s LIMIT 1
"""


def _check_metric_name(name: Any) -> None:
    if name is not None and (not isinstance(name, str) or not name or "\x00" in name):
        raise ValidationError(
            f"metric_name must be a non-empty string without NUL characters, got {name!r}")


class ColdTier:
    """Archived chunk ranges of one database: their manifest there, their files under the roots.

    Parameters
    ----------
    db
        The database whose hypertables are archived (and whose ``agts.archive_units`` /
        ``agts.archive_files`` are the manifest).
    config
        The ``archive`` section: default root and S3 settings.
    """

    def __init__(self, db: Database, config: ArchiveConfig) -> None:
        self.db = db
        self.config = config
        self._metrics_spec: TableSpec | None = None  # where cold metric reads look: resolved once
        self._stores: dict[str | None, ArchiveStore] = {}

    def __repr__(self) -> str:
        return f"ColdTier(root={self.config.root!r})"

    def store(self, root: str | None = None) -> ArchiveStore:
        """The store of ``root`` (default ``archive.root``).

        Raises
        ------
        ConfigError
            Neither is set.
        """
        store = self._stores.get(root)
        if store is None:
            store = self._stores.setdefault(root, ArchiveStore.from_config(self.config, root))
        return store

    def spec(self, table: str) -> TableSpec:
        """The archive spec of ``table`` (``metrics``, ``orders``, a hypertable name)."""
        with self.db.connection(f"read the hypertables for {table!r}") as conn:
            return resolve(conn, table)

    # -- moving data -------------------------------------------------------------------------

    def archive(
        self, table: str, start: Any = None, end: Any = None, *, drop: bool = False,
        root: str | None = None, row_group_rows: int | None = None,
        metric_name: str | None = None,
    ) -> ArchiveReport:
        """See :meth:`agts.StorageEngine.archive`."""
        if not isinstance(table, str) or not table:
            raise ValidationError(f"table must be a table name, got {table!r}")
        if row_group_rows is not None:
            check_positive_int(row_group_rows, name="row_group_rows")
        start_utc = optional_utc(start, name="start")
        end_utc = optional_utc(end, name="end") or datetime.now(UTC)
        if start_utc is not None and end_utc <= start_utc:
            raise ValidationError(f"end must be after start, got start={start_utc.isoformat()!r} "
                                  f"end={end_utc.isoformat()!r}")
        _check_metric_name(metric_name)
        store = self.store(root)
        spec = self.spec(table)
        if metric_name is not None and spec.name != METRICS:
            raise ValidationError(
                f"metric_name applies to table 'metrics' only, got table {table!r}")
        report = Archiver(self.db, store, spec, row_group_rows=row_group_rows).run(
            start_utc, end_utc, drop=drop, metric_name=metric_name)
        log.info("archive %s: %s", spec.name, report)
        return report

    def restore(self, table: str, start: Any, end: Any, *, root: str | None = None) -> int:
        """See :meth:`agts.StorageEngine.restore`."""
        return restore(self.db, self.store, table, start, end, root=root)

    # -- reading -----------------------------------------------------------------------------

    def iceberg(self, root: str | None = None) -> IcebergCatalog:
        """The Iceberg catalog of this database, new tables under ``root`` (close it when done)."""
        return IcebergCatalog(self.db, self.store(root))

    def duckdb(self, root: str | None = None, as_of: SnapshotRef | None = None
               ) -> duckdb.DuckDBPyConnection:
        """See :meth:`agts.StorageEngine.cold`."""
        store = self.store(root)
        with IcebergCatalog(self.db, store) as catalog:
            return duckdb_connection(catalog, store, as_of)

    def scan(self, table: str, root: str | None = None, as_of: SnapshotRef | None = None
             ) -> pl.LazyFrame:
        """See :meth:`agts.StorageEngine.scan_cold`."""
        store = self.store(root)
        with IcebergCatalog(self.db, store) as catalog:
            return scan(catalog, store, self.spec(table).name, as_of)

    def snapshots(self, table: str, root: str | None = None) -> list[SnapshotInfo]:
        """See :meth:`agts.StorageEngine.cold_snapshots`."""
        name = self.spec(table).name
        with IcebergCatalog(self.db, self.store(root)) as catalog:
            return catalog.snapshots(name)

    def query(self, table: str, start: Any, end: Any, *, metric_name: str | None = None,
              root: str | None = None) -> pl.DataFrame:
        """See :meth:`agts.StorageEngine.query_cold`."""
        start_utc, end_utc = check_range(start, end)
        _check_metric_name(metric_name)
        with self.db.read_connection(f"read the cold tier of {table!r}") as conn:
            spec = resolve(conn, table)
            if metric_name is not None and spec.name != METRICS:
                raise ValidationError(
                    f"metric_name applies to table 'metrics' only, got table {table!r}")
            files = cold_files(conn, spec, start_utc, end_utc, metric_name)
        return read_cold(self.store, spec, files, start_utc, end_utc, metric_name=metric_name,
                         root=root)

    def verify(self, table: str | None = None) -> pl.DataFrame:
        """See :meth:`agts.StorageEngine.verify_cold`."""
        if table is not None and (not isinstance(table, str) or not table or "\x00" in table):
            raise ValidationError(f"table must be an archive table name, got {table!r}")
        with self.db.read_connection("read the archive manifest") as conn:
            rows = conn.execute(
                "SELECT table_name, root, path, state, rows, bytes, sha256 "
                "FROM agts.archive_manifest WHERE %s::text IS NULL OR table_name = %s "
                "ORDER BY table_name, root, path", [table, table]).fetchall()
        stores: dict[str, ArchiveStore] = {}
        problems: list[str | None] = []
        for _, root, path, _, count, size, sha in rows:
            store = stores.get(root) or stores.setdefault(root, self.store(root))
            problems.append(_problem(store, path, count, size, sha))
        frame = pl.DataFrame(rows, orient="row", schema={
            "table_name": pl.String, "root": pl.String, "path": pl.String, "state": pl.String,
            "rows": pl.Int64, "bytes": pl.Int64, "sha256": pl.String})
        return frame.drop("sha256").with_columns(pl.Series("problem", problems, pl.String))

    def upgrade(self, table: str | None = None) -> pl.DataFrame:
        """See :meth:`agts.StorageEngine.upgrade_cold`."""
        with self.db.read_connection("read the archive manifest") as conn:
            names = [r[0] for r in conn.execute(
                "SELECT DISTINCT table_name FROM agts.archive_units WHERE state IN "
                "('verified', 'dropped') AND (%s::text IS NULL OR table_name = %s) ORDER BY 1",
                [table, table]).fetchall()]
        if table is not None and not names:
            self.spec(table)  # an unknown name is a ValidationError listing the known ones
        results = []
        for name in names:
            checked = self.verify(name).filter(pl.col("state").is_in(["verified", "dropped"]))
            bad = checked.filter(pl.col("problem").is_not_null())
            if bad.height:
                raise ArchiveError(
                    f"cannot register the archive of {name!r} in Iceberg: {bad.height} file(s) "
                    f"are not the ones recorded, the first: {bad['problem'][0]} (run "
                    "`agts archive verify`)", path=str(bad["root"][0]))
            spec = self.spec(name)
            roots = checked.group_by("root").len().sort("len", descending=True)
            root = str(roots["root"][0]) if roots.height else None
            archiver = Archiver(self.db, self.store(root), spec)
            # The table's archive lock: a run committing meanwhile would otherwise see its files
            # left out of the snapshot this commit makes from an older reading of the manifest.
            with self.db.exclusive(f"archive:{spec.qualified}", wait=5.0) as held:
                if not held:
                    raise ArchiveError(
                        f"cannot upgrade the archive of {name!r} now: an archive run holds it; "
                        "try again when it is done", path=root or "", transient=True)
                try:
                    snapshot = archiver.commit("upgrade: register the archived files")
                finally:
                    archiver.iceberg.close()
            results.append((name, checked.height, int(checked["rows"].sum() or 0), snapshot))
        return pl.DataFrame(results, orient="row", schema={
            "table_name": pl.String, "files": pl.Int64, "rows": pl.Int64,
            "snapshot_id": pl.Int64})

    def series_points(self, names: list[str], start: datetime, end: datetime,
                      series_ids: list[int]) -> tuple[pl.DataFrame | None, pl.DataFrame | None]:
        """The archived points of ``series_ids`` (of metrics ``names``) in ``[start, end)`` whose
        hot rows were dropped, from one indexed look at the manifest.

        Returns ``(points, legacy)``: ``points`` (``timestamp, series_id, value``) from files that
        carry ``series_id``, read by row group (:func:`~agts.archive._cold.read_series`);
        ``legacy`` (``timestamp, metric_name, value, labels``) from files written before it
        (schema version 1), every series of the metrics: the caller matches them by labels.
        Either is None when there is nothing of its kind."""
        if not names or not series_ids or start >= end:
            return None, None
        spec = self._metrics_spec
        with self.db.read_connection("read the cold tier of 'metrics'") as conn:
            if spec is None:
                if conn.execute(_ANY_DROPPED, [METRICS, end, start]).fetchone() is None:
                    return None, None
                spec = self._metrics_spec = resolve(conn, METRICS)
            one = names[0] if len(names) == 1 else None
            files = sorted(set(cold_files(conn, spec, start, end, one)))
        recent = [f for f in files if f.schema_version >= 2]
        older = [f for f in files if f.schema_version < 2]
        points = None
        if recent:
            roots = list(dict.fromkeys(f.root for f in recent))  # in the order units were made
            tables = [read_series(self.store(root), [f for f in recent if f.root == root],
                                  series_ids, start, end) for root in roots]
            found = pl.from_arrow(tables[0] if len(tables) == 1 else pa.concat_tables(tables))
            assert isinstance(found, pl.DataFrame)
            points = found
            if units_overlap(recent):  # the first archived copy of a point key wins
                points = points.unique(["series_id", "timestamp"], keep="first",
                                       maintain_order=True)
        legacy = None
        if older:
            rows = read_cold(self.store, spec, older, start, end, metric_name=one)
            legacy = rows if one is not None else rows.filter(pl.col("metric_name").is_in(names))
        return points, legacy


def _problem(store: ArchiveStore, path: str, rows: int, size: int, sha: str) -> str | None:
    """What is wrong with one archived file (None: it is the file the manifest recorded)."""
    try:
        store.check(path, size=size, sha256=sha, again=True)
        with store.fs.open_input_file(store.path(path)) as handle:
            found = pq.ParquetFile(handle).metadata.num_rows
    except ArchiveError as exc:
        return str(exc)
    except (OSError, pa.ArrowException) as exc:
        return f"the archived file {store.uri(path)!r} is not a readable Parquet file ({exc})"
    if found != rows:
        return (f"the archived file {store.uri(path)!r} holds {found} rows, the manifest "
                f"recorded {rows}")
    return None
