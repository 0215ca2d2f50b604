"""Reading the cold tier: DuckDB views, Polars scans, and the cold complement of the hot tier.

DuckDB and Polars read every complete file of a table (``table=<name>/date=*/*.parquet``),
including copies of ranges that are still hot. :func:`query_cold` instead reads, through the
manifest, exactly the files whose rows are no longer in the hot tier, so ``hot ∪ cold`` holds
every row once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from agts.archive._export import METRICS_SCHEMA
from agts.archive._store import ArchiveStore
from agts.archive._tables import METRICS, TableSpec
from agts.config import ArchiveConfig, StorageConfig
from agts.errors import ArchiveError, ValidationError

__all__ = ["ArchivedFile", "archived_tables", "cold", "cold_files", "duckdb_connection",
           "empty_frame", "read_cold", "read_files", "scan"]

log = logging.getLogger(__name__)

_PG_TO_POLARS: dict[str, pl.DataType] = {
    "timestamp with time zone": pl.Datetime("us", "UTC"),
    "timestamp without time zone": pl.Datetime("us"),
    "double precision": pl.Float64(), "real": pl.Float32(), "integer": pl.Int32(),
    "bigint": pl.Int64(), "smallint": pl.Int16(), "boolean": pl.Boolean(), "date": pl.Date(),
}


#: What a ``table=<name>`` folder may be called: the names agts gives archived tables.
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _existing(store: ArchiveStore) -> ArchiveStore:
    """``store``, checked to exist: a missing local root (a disk not mounted, a typo) must not read
    as an empty archive."""
    if not store.is_s3 and store.fs.get_file_info(store.base).type != pafs.FileType.Directory:
        raise ArchiveError(
            f"the archive root {store.root!r} is not a directory (not mounted, moved, or nothing "
            "archived there yet)", path=store.root)
    return store


def archived_tables(store: ArchiveStore) -> list[str]:
    """Names of the tables with at least one data file in a ``table=<name>`` folder under the root
    (an export that found no rows leaves a folder with only its manifest). A folder whose name is
    not one agts writes (a lower-case identifier, as the hypertables' names) is passed over with a
    warning: names become DuckDB view names and glob patterns, and a folder anyone could create
    must not become SQL."""
    selector = pafs.FileSelector(store.base, recursive=False, allow_not_found=True)
    names = []
    for info in store.fs.get_file_info(selector):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("table="):
            name = info.base_name[len("table="):]
            if not _TABLE_NAME.fullmatch(name):
                log.warning("archive %s: folder %r is not a table agts writes; passed over",
                            store.root, info.base_name)
            elif _has_data_files(store, info.path):
                names.append(name)
    return sorted(names)


def _has_data_files(store: ArchiveStore, folder: str) -> bool:
    selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
    return any(info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
               and not info.base_name.startswith(".") for info in store.fs.get_file_info(selector))


def _dataset(store: ArchiveStore, table: str) -> ds.Dataset:
    return ds.dataset(
        store.path(f"table={table}"), filesystem=store.fs, format="parquet",
        partitioning=ds.partitioning(pa.schema([("date", pa.date32())]), flavor="hive"),
        exclude_invalid_files=False)


def duckdb_connection(store: ArchiveStore) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per archived table (session time zone UTC).

    Raises
    ------
    ArchiveError
        The root does not exist, or a file of a table cannot be read (the message names it).
    """
    tables = archived_tables(_existing(store))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for table in tables:
            if store.is_s3:
                con.register(f"_arrow_{table}", _dataset(store, table))
                con.execute(f'CREATE VIEW "{table}" AS SELECT * FROM "_arrow_{table}"')
                continue
            pattern = store.path(f"table={table}/*/*.parquet").replace("'", "''")
            con.execute(
                f'CREATE VIEW "{table}" AS SELECT * EXCLUDE ("table") FROM read_parquet('
                f"'{pattern}', hive_partitioning = true, union_by_name = true)")
    except duckdb.Error as exc:
        con.close()
        raise ArchiveError(f"cannot open the archived tables under {store.root!r} in DuckDB: "
                           f"{str(exc).strip().splitlines()[0]}", path=store.root) from exc
    except BaseException:
        con.close()
        raise
    return con


def scan(store: ArchiveStore, table: str) -> pl.LazyFrame:
    """A ``LazyFrame`` over the archived files of ``table`` (with the ``date`` partition column)."""
    if table not in archived_tables(_existing(store)):
        raise ValidationError(
            f"table {table!r} has no files under {store.root!r}; archived tables: "
            f"{archived_tables(store)!r}")
    if store.is_s3:
        return pl.scan_pyarrow_dataset(_dataset(store, table))
    return pl.scan_parquet(store.path(f"table={table}/*/*.parquet"),
                           hive_partitioning=True).drop("table")


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


def cold_files(conn: Any, spec: TableSpec, start: datetime, end: datetime,
               metric_name: str | None) -> list[ArchivedFile]:
    """The files holding rows of ``[start, end)`` that are gone from the hot tier."""
    rows = conn.execute(
        """
        SELECT u.root, f.path, f.bytes, f.sha256
        FROM agts.archive_files f JOIN agts.archive_units u USING (unit_id)
        WHERE u.hypertable = %s AND u.state = 'dropped' AND u.range_start < %s AND u.range_end > %s
          AND f.max_time >= %s AND f.min_time < %s
          AND (u.metric_name IS NULL OR %s::text IS NULL OR u.metric_name = %s::text)
        ORDER BY f.min_time
        """,
        [spec.qualified, end, start, start, end, metric_name, metric_name],
    ).fetchall()
    return [ArchivedFile(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]


def read_cold(
    stores: Callable[[str], ArchiveStore], spec: TableSpec, files: list[ArchivedFile],
    start: datetime, end: datetime, *, metric_name: str | None = None, root: str | None = None,
) -> pl.DataFrame:
    """The rows of ``files`` inside ``[start, end)`` (and of one metric), ordered by time;
    ``stores`` gives the store of a root, ``root`` overrides every file's."""
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


def cold(root: str | None = None, *, config: StorageConfig | None = None
         ) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection over an archive, no database needed.

    Parameters
    ----------
    root
        A directory or ``s3://bucket/prefix``; default ``archive.root`` of the configuration.
    config
        A :class:`agts.StorageConfig` (default: loaded from file and environment).
    """
    settings: ArchiveConfig = (config if config is not None else StorageConfig.load()).archive
    return duckdb_connection(ArchiveStore.from_config(settings, root))
