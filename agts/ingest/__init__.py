"""Metrics ingest: validation, idempotent bulk writes, the buffered pipeline and its spool.

The engine's ``insert_metric``, ``insert_metrics_batch`` and ``ingestor`` are the way in; the
names users may touch are re-exported from :mod:`agts`.
"""

from __future__ import annotations

from agts.ingest._batch import default_spool_dir, insert_batch
from agts.ingest._pipeline import Ingestor, IngestStats
from agts.ingest._types import IngestResult, MetricPoint
from agts.ingest._writer import MetricsWriter

__all__ = [
    "IngestResult",
    "IngestStats",
    "Ingestor",
    "MetricPoint",
    "MetricsWriter",
    "default_spool_dir",
    "insert_batch",
]
