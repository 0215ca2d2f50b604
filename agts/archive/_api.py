"""The engine's archive entry point: check arguments, resolve the table, run the archiver."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agts.archive._archiver import Archiver, ArchiveReport
from agts.archive._store import ArchiveStore
from agts.archive._tables import resolve
from agts.errors import ConfigError
from agts.query._args import to_utc

if TYPE_CHECKING:
    from agts._engine import StorageEngine

__all__ = ["archive", "optional_utc"]

log = logging.getLogger(__name__)


def optional_utc(value: Any, *, name: str) -> datetime | None:
    """None, or ``value`` as a UTC datetime (naive values are taken to be UTC)."""
    return None if value is None else to_utc(value, name=name)


def archive(
    engine: StorageEngine, table: str, start: Any = None, end: Any = None, *, drop: bool = False,
    root: str | None = None, row_group_rows: int = 1_000_000, metric_name: str | None = None,
) -> ArchiveReport:
    """See :meth:`agts.StorageEngine.archive`."""
    if not isinstance(table, str) or not table:
        raise ConfigError(f"table must be a non-empty table name, got {table!r}")
    if isinstance(row_group_rows, bool) or not isinstance(row_group_rows, int) or row_group_rows <= 0:
        raise ConfigError(f"row_group_rows must be a positive integer, got {row_group_rows!r}")
    start_utc = optional_utc(start, name="start")
    end_utc = optional_utc(end, name="end") or datetime.now(UTC)
    if start_utc is not None and end_utc <= start_utc:
        raise ConfigError(f"end must be after start, got start={start_utc.isoformat()!r} "
                          f"end={end_utc.isoformat()!r}")
    store = ArchiveStore.from_config(engine.config.archive, root)
    with engine.db.connection() as conn:
        spec = resolve(conn, table)
    if metric_name is not None and spec.name != "metrics":
        raise ConfigError(f"metric_name applies to table 'metrics' only, got table {table!r}")
    report = Archiver(engine.db, store, spec, row_group_rows=row_group_rows).run(
        start_utc, end_utc, drop=drop, metric_name=metric_name)
    log.info("archive %s: %s", spec.name, report)
    return report
