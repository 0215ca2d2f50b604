"""The storage report: bytes per table, chunk and tier, compression, growth and a projection.

Tiers: ``hot`` (uncompressed chunks), ``warm`` (compressed chunks, Community edition) and
``cold`` (Parquet units in the archive, from the manifest). Growth is measured from the chunks
whose range starts in the last ``growth_days`` days (hot and warm, plus cold units of that period),
so it is the rate data arrives at, whatever retention has done since.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import polars as pl

from agts.archive import table_specs
from agts.config import RetentionConfig
from agts.db._database import Database
from agts.errors import ValidationError

__all__ = ["storage_report"]

By = Literal["table", "chunk"]

_CHUNK_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "table": pl.String, "tier": pl.String, "chunk": pl.String,
    "range_start": pl.Datetime("us", "UTC"), "range_end": pl.Datetime("us", "UTC"),
    "rows": pl.Int64, "bytes": pl.Int64, "bytes_uncompressed": pl.Int64,
}


def _chunk_rows(db: Database) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    community = db.server.community
    with db.connection("read the storage report") as conn:
        specs = table_specs(conn)
        for spec in specs.values():
            compressed: dict[str, int] = {}
            if community and spec.compression_enabled:
                for name, before in conn.execute(
                    "SELECT chunk_name, before_compression_total_bytes "
                    "FROM chunk_compression_stats(%s::regclass) WHERE compression_status = "
                    "'Compressed'", [spec.qualified]).fetchall():
                    compressed[name] = int(before or 0)
            for r in conn.execute(
                """
                SELECT c.chunk_name, c.range_start, c.range_end, s.total_bytes,
                       approximate_row_count(format('%%I.%%I', c.chunk_schema, c.chunk_name)::regclass)
                FROM timescaledb_information.chunks c
                JOIN chunks_detailed_size(%s::regclass) s
                  ON s.chunk_schema = c.chunk_schema AND s.chunk_name = c.chunk_name
                WHERE c.hypertable_schema = %s AND c.hypertable_name = %s
                """, [spec.qualified, spec.schema, spec.table]).fetchall():
                tier = "warm" if r[0] in compressed else "hot"
                total = int(r[3] or 0)
                rows.append((spec.name, tier, r[0], r[1], r[2], max(int(r[4] or 0), 0), total,
                             compressed.get(r[0], total)))
        archived = conn.execute("SELECT to_regclass('agts.archive_units') IS NOT NULL").fetchone()
        if not archived or not archived[0]:
            return rows  # migration 0005 not applied: no cold tier yet
        for r in conn.execute(
            """
            SELECT u.table_name, u.range_start, u.range_end, u.rows, coalesce(sum(f.bytes), 0),
                   u.metric_name
            FROM agts.archive_units u LEFT JOIN agts.archive_files f USING (unit_id)
            WHERE u.state = 'dropped' GROUP BY u.unit_id
            """).fetchall():
            label = "archive" if r[5] is None else f"archive metric={r[5]}"
            rows.append((r[0], "cold", label, r[1], r[2], int(r[3] or 0), int(r[4]), None))
    return rows


def storage_report(db: Database, settings: RetentionConfig, *, by: By = "table",
                   growth_days: int = 7) -> pl.DataFrame:
    """Storage per table (``by="table"``) or per chunk and archive unit (``by="chunk"``).

    Returns
    -------
    pl.DataFrame
        ``by="chunk"``: ``table, tier, chunk, range_start, range_end, rows, bytes,
        bytes_uncompressed`` (rows approximate for hot chunks, exact for cold units).
        ``by="table"``: ``table, hot_bytes, warm_bytes, cold_bytes, total_bytes,
        compression_ratio`` (uncompressed ÷ compressed bytes of warm chunks),
        ``cold_rows, growth_bytes_per_day, retention_days, projected_bytes_30d`` (hot and warm
        bytes in 30 days without retention) and ``steady_state_bytes`` (growth × retention days).
    """
    if by not in get_args(By):
        raise ValidationError(f"by must be one of {get_args(By)!r}, got {by!r}")
    if isinstance(growth_days, bool) or not isinstance(growth_days, int) or growth_days <= 0:
        raise ValidationError(f"growth_days must be a positive integer, got {growth_days!r}")
    frame = pl.DataFrame(_chunk_rows(db), schema=_CHUNK_SCHEMA, orient="row").sort(
        "table", "range_start", "tier")
    if by == "chunk":
        return frame
    since = datetime.now(UTC) - timedelta(days=growth_days)
    kinds = {"metrics": settings.metrics_retention_days, "market_quotes": settings.metrics_retention_days}
    for name in ("orders", "order_events", "fills", "position_snapshots", "risk_decisions"):
        kinds[name] = settings.execution_retention_days
    tier_bytes = [pl.col("bytes").filter(pl.col("tier") == t).sum().alias(f"{t}_bytes")
                  for t in ("hot", "warm", "cold")]
    summary = frame.group_by("table").agg(
        *tier_bytes,
        pl.col("bytes").sum().alias("total_bytes"),
        (pl.col("bytes_uncompressed").filter(pl.col("tier") == "warm").sum()
         / pl.col("bytes").filter(pl.col("tier") == "warm").sum()).alias("compression_ratio"),
        pl.col("rows").filter(pl.col("tier") == "cold").sum().alias("cold_rows"),
        (pl.col("bytes").filter(pl.col("range_start") >= since).sum() / growth_days)
        .alias("growth_bytes_per_day"),
    )
    return summary.with_columns(
        pl.col("table").replace_strict(kinds, default=None, return_dtype=pl.Int64)
        .alias("retention_days"),
    ).with_columns(
        (pl.col("hot_bytes") + pl.col("warm_bytes") + 30 * pl.col("growth_bytes_per_day"))
        .round(0).cast(pl.Int64).alias("projected_bytes_30d"),
        (pl.col("growth_bytes_per_day") * pl.col("retention_days")).round(0).cast(pl.Int64)
        .alias("steady_state_bytes"),
    ).sort("table")
