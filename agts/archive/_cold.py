"""Reading the cold tier: DuckDB views, Polars scans, and the cold complement of the hot tier.

DuckDB and Polars read the data files of each table's current Iceberg snapshot (or the snapshot
``as_of`` names): every archived range once, including copies of ranges that are still hot, and
never a file a commit has not made visible. :func:`query_cold` instead reads, through the
database's manifest, exactly the files whose rows are no longer in the hot tier, so ``hot ∪ cold``
holds every row once.

No SQL is built from a name found in the catalog or on disk: views are created from relations
(DuckDB) or registered datasets, under names checked to be ones agts writes, and every file path
a snapshot lists must lie inside the archive root.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from agts.archive._export import METRICS_SCHEMA
from agts.archive._iceberg import IcebergCatalog, SnapshotRef
from agts.archive._store import ArchiveStore
from agts.archive._tables import METRICS, TableSpec
from agts.config import ArchiveConfig, StorageConfig
from agts.errors import ArchiveError, ValidationError

__all__ = ["ArchivedFile", "cold", "cold_files", "duckdb_connection", "empty_frame",
           "read_cold", "read_files", "read_series", "scan", "snapshot_paths", "units_overlap"]

log = logging.getLogger(__name__)

_PG_TO_POLARS: dict[str, pl.DataType] = {
    "timestamp with time zone": pl.Datetime("us", "UTC"),
    "timestamp without time zone": pl.Datetime("us"),
    "double precision": pl.Float64(), "real": pl.Float32(), "integer": pl.Int32(),
    "bigint": pl.Int64(), "smallint": pl.Int16(), "boolean": pl.Boolean(), "date": pl.Date(),
}


#: What a cold-tier table may be called: the names agts gives archived tables.
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _existing(store: ArchiveStore) -> ArchiveStore:
    """``store``, checked to exist: a missing local root (a disk not mounted, a typo) must not read
    as an empty archive."""
    if not store.is_s3 and store.fs.get_file_info(store.base).type != pafs.FileType.Directory:
        raise ArchiveError(
            f"the archive root {store.root!r} is not a directory (not mounted, moved, or nothing "
            "archived there yet)", path=store.root)
    return store


def snapshot_paths(catalog: IcebergCatalog, store: ArchiveStore, table: str,
                   as_of: SnapshotRef | None = None) -> list[str] | None:
    """The filesystem paths of ``table``'s data files in its current snapshot (or ``as_of``),
    each checked to lie inside ``store``'s root; None when the catalog has no such table.

    Raises
    ------
    ArchiveError
        A file of the snapshot lies outside the root (the message names it).
    """
    iceberg = catalog.table(table)
    if iceberg is None:
        return None
    store.relative(iceberg.metadata_location)  # the catalog row must point inside the root too
    uris = catalog.files(table, as_of, table=iceberg)
    assert uris is not None
    return [store.path(store.relative(uri)) for uri in uris]


def _tables(catalog: IcebergCatalog) -> list[str]:
    names = []
    for name in catalog.tables():
        if _TABLE_NAME.fullmatch(name):
            names.append(name)
        else:
            log.warning("Iceberg catalog: table %r is not one agts writes; passed over", name)
    return names


def duckdb_connection(catalog: IcebergCatalog, store: ArchiveStore,
                      as_of: SnapshotRef | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per archived table with data files (session
    time zone UTC), over each table's current snapshot (or the one current at ``as_of``).

    Raises
    ------
    ArchiveError
        The root does not exist, a file of a snapshot lies outside it or cannot be read (the
        message names it).
    """
    _existing(store)
    views = {}
    for table in _tables(catalog):
        try:
            paths = snapshot_paths(catalog, store, table, as_of)
        except ValidationError:
            if as_of is None:
                raise
            continue  # archived after as_of: not there yet
        if paths:
            views[table] = paths
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for table, paths in views.items():
            if store.is_s3:
                con.register(table, ds.dataset(paths, filesystem=store.fs, format="parquet"))
            else:
                con.read_parquet(paths, union_by_name=True).create_view(table)
    except duckdb.Error as exc:
        con.close()
        raise ArchiveError(f"cannot open the archived tables under {store.root!r} in DuckDB: "
                           f"{str(exc).strip().splitlines()[0]}", path=store.root) from exc
    except BaseException:
        con.close()
        raise
    return con


def scan(catalog: IcebergCatalog, store: ArchiveStore, table: str,
         as_of: SnapshotRef | None = None) -> pl.LazyFrame:
    """A ``LazyFrame`` over the data files of ``table``'s current snapshot (or ``as_of``)."""
    _existing(store)
    paths = snapshot_paths(catalog, store, table, as_of)
    if not paths:
        raise ValidationError(
            f"table {table!r} has no archived files under {store.root!r}"
            + ("" if as_of is None else f" as of {as_of!r}")
            + f"; archived tables: {_tables(catalog)!r}")
    iceberg = catalog.table(table)
    assert iceberg is not None
    schema = iceberg.schema().as_arrow()
    if store.is_s3:
        return pl.scan_pyarrow_dataset(ds.dataset(paths, schema=schema, filesystem=store.fs,
                                                  format="parquet"))
    # The table's schema, not the first file's: files of schema version 1 lack series_id.
    polars_schema = pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]
    return pl.scan_parquet(paths, schema=polars_schema, missing_columns="insert")


def empty_frame(spec: TableSpec) -> pl.DataFrame:
    """A frame with no rows and the archive's columns of ``spec``."""
    if spec.name == METRICS:
        return pl.from_arrow(METRICS_SCHEMA.empty_table())  # type: ignore[return-value]
    return pl.DataFrame(schema={
        column: _PG_TO_POLARS.get(type_, pl.String()) for column, type_ in spec.columns})


class ArchivedFile(NamedTuple):
    """A data file of the cold tier as the database's manifest records it."""

    root: str
    path: str  # relative to the root
    size: int
    sha256: str
    schema_version: int = 2
    unit_start: datetime | None = None  # the range of the file's unit
    unit_end: datetime | None = None
    unit_id: int | None = None


def cold_files(conn: Any, spec: TableSpec, start: datetime, end: datetime,
               metric_name: str | None) -> list[ArchivedFile]:
    """The files holding rows of ``[start, end)`` that are gone from the hot tier."""
    rows = conn.execute(
        """
        SELECT u.root, f.path, f.bytes, f.sha256, f.schema_version, u.range_start, u.range_end,
               u.unit_id
        FROM agts.archive_files f JOIN agts.archive_units u USING (unit_id)
        WHERE u.hypertable = %s AND u.state = 'dropped' AND u.range_start < %s AND u.range_end > %s
          AND f.max_time >= %s AND f.min_time < %s
          AND (u.metric_name IS NULL OR %s::text IS NULL OR u.metric_name = %s::text)
        ORDER BY u.unit_id, f.min_time
        """,
        [spec.qualified, end, start, start, end, metric_name, metric_name],
    ).fetchall()
    return [ArchivedFile(str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]), r[5], r[6],
                         int(r[7])) for r in rows]


def units_overlap(files: list[ArchivedFile]) -> bool:
    """Whether two of the files' units cover a common instant (a range archived whole and a
    per-metric copy of points written into it after it was dropped): their rows may share point
    keys, so a reader must keep each key once."""
    ranges = sorted({(f.unit_start, f.unit_end, f.unit_id) for f in files
                     if f.unit_start is not None and f.unit_end is not None})
    return any(b[0] < a[1] for a, b in itertools.pairwise(ranges))


def read_cold(
    stores: Callable[[str], ArchiveStore], spec: TableSpec, files: list[ArchivedFile],
    start: datetime, end: datetime, *, metric_name: str | None = None, root: str | None = None,
) -> pl.DataFrame:
    """The rows of ``files`` inside ``[start, end)`` (and of one metric), ordered by time;
    ``stores`` gives the store of a root, ``root`` overrides every file's. (Series of metric
    points are read by :func:`read_series`.)"""
    if not files:
        return empty_frame(spec)
    time_column = spec.archive_time_column
    expr = (ds.field(time_column) >= pa.scalar(start, pa.timestamp("us", tz="UTC"))) & (
        ds.field(time_column) < pa.scalar(end, pa.timestamp("us", tz="UTC")))
    if metric_name is not None:
        expr = expr & (ds.field("metric_name") == metric_name)
    tables = []
    for file_root in sorted({f.root for f in files}):
        store = stores(root if root is not None else file_root)
        tables.append(read_files(store, [f for f in files if f.root == file_root], spec,
                                 filter=expr))
    frame = pl.from_arrow(pa.concat_tables(tables, promote_options="default"))
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(time_column, maintain_order=True)


#: The columns a series read needs: agts knows the names and labels of its series.
SERIES_COLUMNS = ["timestamp", "series_id", "value"]


@dataclass(frozen=True)
class _Footer:
    """A metric file's footer and, per row group, the range of series ids and of times in it."""

    metadata: pq.FileMetaData
    sid_min: np.ndarray
    sid_max: np.ndarray
    t_min: np.ndarray  # microseconds since the epoch
    t_max: np.ndarray


#: Footers of metric files by file version (uri, size, mtime): parsed once per process.
_FOOTERS: dict[tuple[str, int, int | None], _Footer] = {}
_FOOTERS_MAX = 10_000
_FOOTERS_LOCK = threading.Lock()


def _micros(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp()) * 1_000_000 + value.microsecond
    return int(value)


def _footer(store: ArchiveStore, path: str) -> _Footer:
    full = store.path(path)
    info = store.fs.get_file_info(full)
    version = (store.uri(path), info.size, info.mtime_ns)
    found = _FOOTERS.get(version)
    if found is not None:
        return found
    with store.fs.open_input_file(full) as handle:
        metadata = pq.ParquetFile(handle).metadata
    columns = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    groups = metadata.num_row_groups
    bounds = np.empty((4, groups), dtype=np.int64)
    for g in range(groups):
        group = metadata.row_group(g)
        for row, (column, low, high) in enumerate((("series_id", np.iinfo(np.int64).min,
                                                    np.iinfo(np.int64).max),
                                                   ("timestamp", np.iinfo(np.int64).min,
                                                    np.iinfo(np.int64).max))):
            stats = group.column(columns[column]).statistics
            known = stats is not None and stats.has_min_max
            bounds[2 * row, g] = _micros(stats.min) if known else low
            bounds[2 * row + 1, g] = _micros(stats.max) if known else high
    footer = _Footer(metadata, bounds[0], bounds[1], bounds[2], bounds[3])
    with _FOOTERS_LOCK:
        if len(_FOOTERS) >= _FOOTERS_MAX:
            _FOOTERS.clear()
        _FOOTERS[version] = footer
    return footer


def read_series(store: ArchiveStore, files: list[ArchivedFile], series_ids: list[int],
                start: datetime, end: datetime) -> pa.Table:
    """``timestamp, series_id, value`` of ``series_ids`` in ``[start, end)`` from metric files
    that carry ``series_id`` (schema version 2: sorted by series, then time). Only the row
    groups whose statistics admit one of the series and the range are read, and only these
    three columns: one series over an hour reads one row group of one file. Each file is
    checked against its recorded size and sha256 first (:meth:`ArchiveStore.check`).

    Raises
    ------
    ArchiveError
        A file is missing, replaced, cut short or not Parquet (the message names it).
    """
    ids = np.unique(np.asarray(series_ids, dtype=np.int64))
    low = _micros(start)
    high = _micros(end)
    wanted = pa.array(ids.astype(np.int32))
    tables = []
    for file in files:
        store.check(file.path, size=file.size, sha256=file.sha256)
        try:
            footer = _footer(store, file.path)
            first = np.searchsorted(ids, footer.sid_min)  # the first wanted id >= each min
            hit = (first < len(ids)) & (ids[np.minimum(first, len(ids) - 1)] <= footer.sid_max)
            hit &= (footer.t_max >= low) & (footer.t_min < high)
            groups = np.flatnonzero(hit).tolist()
            if not groups:
                continue
            with store.fs.open_input_file(store.path(file.path)) as handle:
                table = pq.ParquetFile(handle, metadata=footer.metadata).read_row_groups(
                    groups, columns=SERIES_COLUMNS)
        except (OSError, pa.ArrowException) as exc:
            raise ArchiveError(
                f"cannot read the archived rows of 'metrics' from {store.uri(file.path)!r}: "
                f"{str(exc).strip().splitlines()[0]}", path=store.root) from exc
        times = table.column("timestamp").cast(pa.int64())
        keep = pc.and_(pc.and_(pc.greater_equal(times, low), pc.less(times, high)),
                       pc.is_in(table.column("series_id"), value_set=wanted))
        tables.append(table.filter(keep))
    if not tables:
        return _SERIES_SCHEMA.empty_table()
    return pa.concat_tables(tables)


_SERIES_SCHEMA = pa.schema([pa.field("timestamp", pa.timestamp("us", tz="UTC")),
                            pa.field("series_id", pa.int32()), pa.field("value", pa.float64())])


def read_files(store: ArchiveStore, files: list[ArchivedFile], spec: TableSpec, *,
               filter: ds.Expression | None = None) -> pa.Table:
    """The rows of archived files of ``store``, each first checked against its recorded size and
    sha256 (:meth:`ArchiveStore.check`).

    Raises
    ------
    ArchiveError
        A file is missing, replaced, cut short or not Parquet, or its path leaves the root; the
        message names it.
    """
    for file in files:
        store.check(file.path, size=file.size, sha256=file.sha256)
    paths = [store.path(file.path) for file in files]
    try:
        return ds.dataset(paths, filesystem=store.fs, format="parquet").to_table(filter=filter)
    except (OSError, pa.ArrowException) as exc:
        failed, error = paths[0], exc
        if len(paths) > 1:  # read them one by one, to name the file that fails
            for path in paths:
                try:
                    ds.dataset([path], filesystem=store.fs, format="parquet").to_table(
                        filter=filter)
                except (OSError, pa.ArrowException) as one:
                    failed, error = path, one
                    break
            else:
                failed = f"{len(paths)} files under {store.root!r}"
        raise ArchiveError(f"cannot read the archived rows of {spec.name!r} from {failed}: "
                           f"{str(error).strip().splitlines()[0]}", path=store.root) from exc


def cold(root: str | None = None, *, config: StorageConfig | None = None,
         as_of: SnapshotRef | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over an archive: one view per archived table, read from its Iceberg
    snapshot in the configured database's catalog.

    Parameters
    ----------
    root
        A directory or ``s3://bucket/prefix``; default ``archive.root`` of the configuration.
    config
        A :class:`agts.StorageConfig` (default: loaded from file and environment).
    as_of
        A snapshot id, or an aware datetime: the archive as it was then.
    """
    from agts.db._database import Database

    loaded = config if config is not None else StorageConfig.load()
    settings: ArchiveConfig = loaded.archive
    store = ArchiveStore.from_config(settings, root)
    db = Database(loaded.database)
    try:
        with IcebergCatalog(db, store) as catalog:
            return duckdb_connection(catalog, store, as_of)
    finally:
        db.close()
