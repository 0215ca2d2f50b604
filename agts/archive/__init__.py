"""The Parquet cold tier, a library of its own: export → verify → drop, the manifest, restore, and
reading archived files back. It knows the database and its configuration section, never the
engine, the query service or the execution store; they hold a :class:`ColdTier`.

Layout under the archive root (a directory or ``s3://bucket/prefix``)::

    table=metrics/date=2026-01-01/metrics-20260101T000000Z-20260102T000000Z.parquet
    table=metrics/_manifest.json
    table=orders/date=2026-01-05/orders-20260105T000000Z-20260112T000000Z.parquet

One file per chunk range and UTC date, zstd-compressed, timestamps as UTC microseconds, metric
labels as ``map<string, string>``. The manifest (path, rows, time range, sha256, schema version,
state) is kept in ``agts.archive_units`` / ``agts.archive_files`` and beside the files.
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
