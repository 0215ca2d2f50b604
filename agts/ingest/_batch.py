"""``insert_metrics_batch``: validate, then write once under a batch id."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

from agts.config import DatabaseConfig
from agts.errors import ValidationError
from agts.ingest._rows import normalize_points
from agts.ingest._types import IngestResult, OnError
from agts.ingest._writer import MetricsWriter

__all__ = ["default_spool_dir", "insert_batch"]


def insert_batch(
    writer: MetricsWriter, data: Any, *, on_error: OnError = "raise",
    batch_id: str | uuid.UUID | None = None,
) -> IngestResult:
    """Validate ``data`` and store its valid points once (see ``StorageEngine.insert_metrics_batch``)."""
    if batch_id is not None:
        try:
            batch_id = uuid.UUID(str(batch_id))
        except ValueError:
            raise ValidationError(f"batch_id must be a UUID, got {batch_id!r}") from None
    batch = normalize_points(data, on_error=on_error)
    if batch.height == 0:
        return IngestResult(0, 0, batch.skipped, None)
    outcome = writer.write(batch, batch_id=batch_id)
    return IngestResult(
        rows_written=outcome.rows_written, duplicates=outcome.duplicates, skipped=batch.skipped,
        batch_id=outcome.batch_id, already_ingested=outcome.already_ingested,
        new_series=outcome.new_series,
    )


def default_spool_dir(database: DatabaseConfig) -> Path:
    """``~/.local/state/agts/spool/<user@host_port_database>``: one spool per database."""
    name = re.sub(r"[^A-Za-z0-9_.@-]+", "_", database.describe())
    return Path.home() / ".local" / "state" / "agts" / "spool" / name
