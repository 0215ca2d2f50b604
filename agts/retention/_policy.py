"""Retention policies from ``retention.*``: which table keeps how many days, and what that means.

- metric points (``metrics``) and market quotes: ``metrics_retention_days``;
- orders, order events, fills, position snapshots, risk decisions: ``execution_retention_days``;
- other hypertables (rollups): not touched;
- ``per_metric_days``: a metric kept *shorter* than its table is archived (if configured) and
  deleted by series (``DELETE ... WHERE series_id IN (series of that metric)``), chunk range by
  chunk range, ahead of the whole chunk. A metric kept *longer* cannot be honoured while whole
  chunks are dropped: it is reported as skipped.

Expiry is chunk-granular: a chunk goes once all of it is older than ``now - days``, so data stays
up to one chunk interval longer than configured, never shorter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from agts.archive import TableSpec
from agts.config import RetentionConfig

__all__ = ["MetricPolicy", "TablePolicy", "table_policies"]


@dataclass(frozen=True)
class TablePolicy:
    """How long one hypertable's rows stay hot."""

    spec: TableSpec
    days: int
    cutoff: datetime


@dataclass(frozen=True)
class MetricPolicy:
    """A metric kept for fewer days than its table."""

    metric_name: str
    days: int
    cutoff: datetime


def table_policies(specs: dict[str, TableSpec], config: RetentionConfig,
                   now: datetime) -> list[TablePolicy]:
    """The policy of every hypertable retention applies to, by name."""
    policies = []
    for name in sorted(specs):
        spec = specs[name]
        if spec.kind in ("metrics", "market"):
            days = config.metrics_retention_days
        elif spec.kind == "execution":
            days = config.execution_retention_days
        else:
            continue
        policies.append(TablePolicy(spec, days, now - timedelta(days=days)))
    return policies


def metric_policies(config: RetentionConfig, now: datetime) -> tuple[list[MetricPolicy], list[str]]:
    """Per-metric policies shorter than the metrics table's, and the names that are longer."""
    shorter, longer = [], []
    for name, days in sorted(config.per_metric_days.items()):
        if days < config.metrics_retention_days:
            shorter.append(MetricPolicy(name, days, now - timedelta(days=days)))
        elif days > config.metrics_retention_days:
            longer.append(name)
    return shorter, longer
