"""Retention: how long data stays hot, compression, archive-then-drop, and the storage report.

See :func:`run_retention` (``engine.run_retention()``, ``agts retention run``) and
:func:`storage_report` (``engine.storage_report()``, ``agts storage``).
"""

from agts.retention._policy import MetricPolicy, TablePolicy, metric_policies, table_policies
from agts.retention._run import Parts, RetentionReport, run_retention
from agts.retention._storage import storage_report

__all__ = [
    "MetricPolicy",
    "Parts",
    "RetentionReport",
    "TablePolicy",
    "metric_policies",
    "run_retention",
    "storage_report",
    "table_policies",
]
