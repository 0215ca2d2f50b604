"""Metric queries as Polars DataFrames: raw ranges, bucketed aggregates, several metrics at once,
rollup routing, keyset pages and bounded batches, a result cache and query statistics.

The public entry points are methods of :class:`agts.StorageEngine` (``query_metrics``,
``query_aggregated``, ``query_metrics_multi``, ``refresh_rollups``, ``query_stats``) and
:func:`agts.next_cursor`.
"""

from agts.query._args import AGGREGATIONS, parse_aggregations, parse_bucket
from agts.query._service import MetricsQueries, next_cursor

__all__ = ["AGGREGATIONS", "MetricsQueries", "next_cursor", "parse_aggregations", "parse_bucket"]
