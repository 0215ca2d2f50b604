"""The cold tier's Apache Iceberg tables, catalogued in the hot tier's own database.

Each archived table is the Iceberg table ``agts.<name>`` of the catalog ``agts``, whose rows live
in ``agts.iceberg_tables`` (migration 0010: the layout of Iceberg's JDBC catalog, which pyiceberg's
SQL catalog shares, so Spark, Trino and Flink attach with a JDBC URI). Its location is
``<root>/table=<name>``: data files under ``date=YYYY-MM-DD/``, Iceberg metadata under
``metadata/``.

agts writes the Parquet data files itself (streamed from the database, sorted, checksummed: see
:mod:`agts.archive._export`) and registers them here. The database's manifest
(``agts.archive_units`` / ``agts.archive_files``) decides which files belong in the table: those of
units that are verified or dropped. :meth:`IcebergCatalog.sync` makes the current snapshot hold
exactly those, in one commit; a commit that is interrupted leaves the previous snapshot current,
and a sync repeated after a crash finds nothing left to do. Files a snapshot stops referring to
stay on disk: older snapshots (``as_of`` reads) still refer to them.

The catalog connects with the database's own settings (``creator``): no connection URI holding a
password is ever built.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from agts.archive._store import ArchiveStore
from agts.archive._tables import METRICS, TableSpec
from agts.errors import ArchiveError, StorageError, ValidationError, translate

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from agts.db._database import Database

__all__ = ["CATALOG", "NAMESPACE", "IcebergCatalog", "SnapshotRef"]

log = logging.getLogger(__name__)

#: The catalog name (``catalog_name`` of ``agts.iceberg_tables``) and the namespace of agts' tables.
CATALOG = "agts"
NAMESPACE = "agts"

#: A snapshot to read: its id, or the archive as it was at an instant.
SnapshotRef = int | datetime


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot of a cold-tier table."""

    snapshot_id: int
    committed_at: datetime
    operation: str
    files: int
    rows: int


def _metrics_schema() -> Any:
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, IntegerType, MapType, NestedField, StringType, TimestamptzType

    # series_id is optional: files written before it existed (schema version 1) are registered as
    # they are, and read it as null (agts then finds their series through the labels).
    return Schema(
        NestedField(1, "timestamp", TimestamptzType(), required=True),
        NestedField(2, "metric_name", StringType(), required=True),
        NestedField(3, "value", DoubleType(), required=True),
        NestedField(4, "labels", MapType(5, StringType(), 6, StringType(), value_required=False),
                    required=True),
        NestedField(7, "series_id", IntegerType(), required=False),
    )


#: Columns whose Parquet statistics agts does not write (the labels map: readers prune on
#: series_id): no column metrics for them in the manifests either.
_NO_METRICS = {METRICS: {"write.metadata.metrics.column.labels.key": "none",
                         "write.metadata.metrics.column.labels.value": "none"}}


def _layout(spec: TableSpec, arrow_schema: pa.Schema) -> tuple[Any, Any, Any]:
    """Schema, partition spec (by day of the time column) and sort order of ``spec``'s table."""
    from pyiceberg.catalog import Catalog
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import assign_fresh_schema_ids
    from pyiceberg.table.sorting import SortField, SortOrder
    from pyiceberg.transforms import DayTransform, IdentityTransform

    if spec.name == METRICS:
        schema = _metrics_schema()
    else:
        schema = assign_fresh_schema_ids(Catalog._convert_schema_if_needed(arrow_schema))
    time_id = schema.find_field(spec.archive_time_column).field_id
    partition = PartitionSpec(PartitionField(
        source_id=time_id, field_id=1000, transform=DayTransform(),
        name=f"{spec.archive_time_column}_day"))
    keys = ([schema.find_field("series_id").field_id] if spec.name == METRICS else []) + [time_id]
    order = SortOrder(*[SortField(source_id=k, transform=IdentityTransform()) for k in keys])
    return schema, partition, order


class IcebergCatalog:
    """The Iceberg catalog in ``db`` (tables under the archive roots of ``store``'s settings).

    Parameters
    ----------
    db
        The database holding ``agts.iceberg_tables`` (migration 0010).
    store
        The store whose root new tables are created under; its S3 settings are the file IO's.
    """

    def __init__(self, db: Database, store: ArchiveStore) -> None:
        self.db = db
        self.store = store
        self._catalog: Any = None

    def __repr__(self) -> str:
        return f"IcebergCatalog(root={self.store.root!r})"

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.engine.dispose()
            self._catalog = None

    def __enter__(self) -> IcebergCatalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def catalog(self) -> Any:
        """The pyiceberg ``SqlCatalog`` (opened on first use)."""
        if self._catalog is None:
            with self._errors("open the Iceberg catalog"):
                self._catalog = _open(self.db, self.store)
        return self._catalog

    # -- tables ------------------------------------------------------------------------------

    def identifier(self, name: str) -> tuple[str, str]:
        return (NAMESPACE, name)

    def table(self, name: str) -> Table | None:
        """The Iceberg table of archive table ``name``, or None when nothing was committed."""
        from pyiceberg.exceptions import NoSuchTableError

        with self.db.connection(f"read the Iceberg catalog row of {name!r}") as conn:
            row = conn.execute(
                "SELECT metadata_location FROM agts.iceberg_tables WHERE catalog_name = %s "
                "AND table_namespace = %s AND table_name = %s", [CATALOG, NAMESPACE, name]
            ).fetchone()
        if row is None:
            return None
        # A catalog row is data anyone with write access to it can change: its metadata file,
        # and so every file it leads to, must lie inside the archive root before it is read.
        self.store.relative(str(row[0] or ""))
        with self._errors(f"load the Iceberg table {NAMESPACE}.{name}"):
            try:
                table = self.catalog.load_table(self.identifier(name))
            except NoSuchTableError:
                return None
        self.store.relative(table.location().rstrip("/"))
        return table

    def tables(self) -> list[str]:
        """Names of the tables in the catalog's namespace."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        with self._errors("list the Iceberg tables"):
            try:
                return sorted(ident[-1] for ident in self.catalog.list_tables(NAMESPACE))
            except NoSuchNamespaceError:
                return []

    def _create(self, spec: TableSpec, sample: pa.Schema) -> Table:
        schema, partition, order = _layout(spec, sample)
        with self._errors(f"create the Iceberg table {NAMESPACE}.{spec.name}"):
            self.catalog.create_namespace_if_not_exists(NAMESPACE)
            table = self.catalog.create_table(
                self.identifier(spec.name), schema=schema,
                location=self.store.uri(f"table={spec.name}") if self.store.is_s3
                else "file://" + self.store.path(f"table={spec.name}"),
                partition_spec=partition, sort_order=order,
                properties={"format-version": "2", "write.parquet.compression-codec": "zstd",
                            "agts.hypertable": spec.qualified, **_NO_METRICS.get(spec.name, {})})
            with table.transaction() as tx:
                tx.set_properties(**{"schema.name-mapping.default":
                                     table.schema().name_mapping.model_dump_json()})
            return table

    # -- commits -----------------------------------------------------------------------------

    def sync(self, spec: TableSpec, files: list[str], properties: dict[str, str]) -> int | None:
        """Make the current snapshot of ``spec``'s table hold exactly the data files ``files``
        (URIs), in one commit (none when it already does). Returns the current snapshot id
        (None: the table has no files and never had).

        Raises
        ------
        ArchiveError
            A file cannot be read or does not fit the table's schema, or the commit failed (a
            concurrent commit: transient, the next run retries).
        """
        table = self.table(spec.name)
        if table is None:
            if not files:
                return None
            with self._errors(f"read {files[0]!r}"), self.store.fs.open_input_file(
                    _fs_path(files[0])) as handle:
                sample = pq.read_schema(handle)
            table = self._create(spec, sample)
        with self._errors(f"read the current snapshot of {NAMESPACE}.{spec.name}"):
            current = dict(_data_files(table))
        wanted = set(files)
        removed = [data for path, data in current.items() if path not in wanted]
        added = [path for path in files if path not in current]
        if not removed and not added:
            snapshot = table.current_snapshot()
            return None if snapshot is None else snapshot.snapshot_id
        with self._errors(f"commit to the Iceberg table {NAMESPACE}.{spec.name}"):
            self._evolve(table, added)
            with table.transaction() as tx:
                data_files = _data_files_of(tx, table, added)
                snap = tx.update_snapshot(snapshot_properties=properties)
                producer = snap.overwrite() if removed else snap.fast_append()
                with producer as commit:
                    for data in removed:
                        commit.delete_data_file(data)
                    for data in data_files:
                        commit.append_data_file(data)
        snapshot = table.current_snapshot()
        assert snapshot is not None
        log.info("iceberg %s.%s: snapshot %d (+%d -%d files)", NAMESPACE, spec.name,
                 snapshot.snapshot_id, len(added), len(removed))
        return int(snapshot.snapshot_id)

    def _evolve(self, table: Table, added: list[str]) -> None:
        """Add to the table's schema the columns new files bring (a column added to the
        hypertable after the first archive)."""
        if not added:
            return
        with self.store.fs.open_input_file(_fs_path(added[-1])) as handle:
            schema = pq.read_schema(handle)
        known = set(table.schema().column_names)
        if all(name in known for name in schema.names):
            return
        with table.update_schema() as update:
            update.union_by_name(pa.schema([f for f in schema if f.name not in known]))
        log.info("iceberg %s: columns %s added", table.name(),
                 [n for n in schema.names if n not in known])

    # -- reading -----------------------------------------------------------------------------

    def files(self, name: str, as_of: SnapshotRef | None = None, *,
              table: Table | None = None) -> list[str] | None:
        """The data files (URIs) of table ``name`` at its current snapshot, or at ``as_of``
        (a snapshot id, or the snapshot current at that instant). None: no such table.

        Raises
        ------
        ValidationError
            ``as_of`` names no snapshot of the table (the message lists the range there is).
        """
        table = table if table is not None else self.table(name)
        if table is None:
            return None
        snapshot = self._snapshot(table, as_of)
        if snapshot is None:
            return []
        with self._errors(f"read the snapshot of {NAMESPACE}.{name}"):
            return [path for path, _ in _data_files(table, snapshot)]

    def snapshots(self, name: str) -> list[SnapshotInfo]:
        """The snapshots of table ``name``, oldest first (empty: no such table)."""
        table = self.table(name)
        if table is None:
            return []
        found = []
        for snap in table.snapshots():
            summary = snap.summary
            props = summary.additional_properties if summary is not None else {}
            found.append(SnapshotInfo(
                snapshot_id=int(snap.snapshot_id),
                committed_at=datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC),
                operation=str(summary.operation.value) if summary is not None else "",
                files=int(props.get("total-data-files", 0)),
                rows=int(props.get("total-records", 0))))
        return found

    def _snapshot(self, table: Table, as_of: SnapshotRef | None) -> Any:
        if as_of is None:
            return table.current_snapshot()
        if isinstance(as_of, bool) or not isinstance(as_of, int | datetime):
            raise ValidationError(
                f"as_of must be a snapshot id (int) or a datetime, got {as_of!r}")
        if isinstance(as_of, int):
            snapshot = table.snapshot_by_id(as_of)
            if snapshot is None:
                ids = [s.snapshot_id for s in table.snapshots()]
                raise ValidationError(f"as_of={as_of} is not a snapshot of {table.name()[-1]!r}; "
                                      f"its snapshots: {ids[-10:]!r}")
            return snapshot
        if as_of.tzinfo is None:
            raise ValidationError(f"as_of must be timezone-aware, got {as_of.isoformat()!r}")
        snapshot = table.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
        if snapshot is None:
            first = min((s.timestamp_ms for s in table.snapshots()), default=None)
            since = ("" if first is None else " (its first snapshot was committed at "
                     f"{datetime.fromtimestamp(first / 1000, UTC).isoformat()})")
            raise ValidationError(f"as_of={as_of.isoformat()!r} is before anything of "
                                  f"{table.name()[-1]!r} was archived{since}")
        return snapshot

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """pyiceberg's and SQLAlchemy's exceptions as :class:`ArchiveError` naming the action
        (a :class:`StorageError` raised inside passes unchanged)."""
        try:
            yield
        except StorageError:
            raise
        except FileNotFoundError as exc:
            raise ArchiveError(f"cannot {action}: a file of the Iceberg table is missing "
                               f"({exc.filename or exc})", path=self.store.root) from exc
        except Exception as exc:
            from pyiceberg.exceptions import CommitFailedException
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, DBAPIError) and exc.orig is not None:  # the server's own error
                raise translate(exc.orig, action=action) from exc
            transient = isinstance(exc, CommitFailedException) or None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArchiveError(f"cannot {action}: {first}", path=self.store.root,
                               transient=transient) from exc


def _fs_path(uri: str) -> str:
    """A data file URI as a :mod:`pyarrow.fs` path (``file://`` and ``s3://`` stripped)."""
    for scheme in ("file://", "s3://"):
        if uri.startswith(scheme):
            return uri[len(scheme):]
    return uri


def _data_files(table: Table, snapshot: Any = None) -> Iterator[tuple[str, Any]]:
    """(file path, DataFile) of every live data file of a snapshot (default: the current one)."""
    snapshot = snapshot if snapshot is not None else table.current_snapshot()
    if snapshot is None:
        return
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            yield entry.data_file.file_path, entry.data_file


def _data_files_of(tx: Any, table: Table, paths: list[str]) -> list[Any]:
    from pyiceberg.io.pyarrow import parquet_file_to_data_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [parquet_file_to_data_file(table.io, tx.table_metadata, path) for path in paths]


def _open(db: Database, store: ArchiveStore) -> Any:
    import sqlalchemy
    from pyiceberg.catalog import MetastoreCatalog
    from pyiceberg.catalog.sql import SqlCatalog
    from sqlalchemy.pool import NullPool

    class _Catalog(SqlCatalog):
        # SqlCatalog builds its engine from a URI; this one connects with the database's own
        # settings (the password never enters a string agts builds or logs).
        def __init__(self, **properties: str) -> None:
            MetastoreCatalog.__init__(self, CATALOG, **properties)
            self.engine = sqlalchemy.create_engine(
                "postgresql+psycopg://", creator=lambda: db.connect_direct(search_path="agts,public"),
                poolclass=NullPool)
            # Migration 0010 made the tables, in the JDBC catalog's version-1 layout: no probe
            # (pyiceberg's takes any failure, a lost connection too, for "no tables yet").
            self._schema_version = "v1"

    properties = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if store.is_s3:
        if store.s3_endpoint:
            properties["s3.endpoint"] = store.s3_endpoint
        if store.s3_region:
            properties["s3.region"] = store.s3_region
    return _Catalog(**properties)
