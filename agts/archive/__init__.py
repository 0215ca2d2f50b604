"""The cold tier, a library of its own: export → verify → commit → drop, the manifest, restore,
and reading archived files back. It knows the database and its configuration section, never the
engine, the query service or the execution store; they hold a :class:`ColdTier`.

Each archived table is an Apache Iceberg table ``agts.<name>`` whose catalog is in the same
database (``agts.iceberg_tables``, the JDBC catalog's layout). Layout under the archive root (a
directory or ``s3://bucket/prefix``)::

    table=metrics/date=2026-01-01/metrics-20260101T000000Z-20260102T000000Z-<attempt>.parquet
    table=metrics/metadata/00001-<uuid>.metadata.json   (Iceberg: snapshots, manifests)
    table=orders/date=2026-01-05/orders-20260105T000000Z-20260112T000000Z-<attempt>.parquet

One file per chunk range and UTC date, zstd-compressed, timestamps as UTC microseconds, metric
labels as ``map<string, string>`` next to ``series_id`` (rows sorted by series, then time). The
manifest (path, rows, time range, sha256, schema version, state, snapshot) is kept in
``agts.archive_units`` / ``agts.archive_files``.
"""

from agts.archive._archiver import Archiver, ArchiveReport, Unit
from agts.archive._cold import cold
from agts.archive._store import ArchiveStore
from agts.archive._tables import SCHEMA_VERSION, TableSpec, chunks, resolve, table_specs
from agts.archive._tier import ColdTier

__all__ = [
    "SCHEMA_VERSION",
    "ArchiveReport",
    "ArchiveStore",
    "Archiver",
    "ColdTier",
    "TableSpec",
    "Unit",
    "chunks",
    "cold",
    "resolve",
    "table_specs",
]
