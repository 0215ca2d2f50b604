"""The cold tier: archive old chunks to Parquet, query them with DuckDB and Polars, read hot ∪ cold,
restore, and see the storage report.

Runs in a temporary database of its own on the configured server (``$AGTS_DSN``, a config
file, or the local default of ``agts local start``), created here and dropped at the end:
nothing in your databases is read or changed. It archives and drops data, which is why it needs a
database of its own. The Parquet files go to ARCHIVE_DIR (kept after the run) or to a temporary
directory (removed at the end).

Run: ``python examples/archive_cold_tier.py [ARCHIVE_DIR]``.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from datetime import UTC, datetime, timedelta

import polars as pl

import agts

DAY = datetime(2026, 1, 10, tzinfo=UTC)  # old enough for the default 90-day retention

with (
    (contextlib.nullcontext(sys.argv[1]) if len(sys.argv) > 1
     else tempfile.TemporaryDirectory(prefix="agts-archive-")) as root,
    agts.temporary_database() as config,
    agts.connect(config, migrate=True) as engine,
):
    # Three days of one metric, a point a minute (chunks are one day by default).
    times = [DAY + timedelta(minutes=i) for i in range(3 * 1440)]
    engine.insert_metrics_batch(pl.DataFrame({
        "timestamp": times, "metric_name": "pnl_usd",
        "value": [float(i % 500) for i in range(len(times))], "labels": '{"strategy": "mm-1"}'}))

    # Export -> verify (sha256 and row counts) -> drop, for the first two days.
    report = engine.archive("metrics", DAY, DAY + timedelta(days=2), drop=True, root=root)
    print(f"archived {report.rows_exported} rows in {report.files_written} files "
          f"({report.bytes_written} bytes), dropped {report.rows_dropped} from the hot tier")

    # Hot ∪ cold: the hot points no longer hold the first two days; query_cold has exactly them.
    start, end = DAY, DAY + timedelta(days=3)
    hot = engine.query_metrics("pnl_usd", start, end)
    cold = engine.query_cold("metrics", start, end, metric_name="pnl_usd", root=root)
    print(f"hot rows: {hot.height}, cold rows: {cold.height}")
    # The rollups were refreshed before the drop: aggregates of archived days are still there.
    daily = engine.query_aggregated("pnl_usd", start, end, "1d", "count")
    print(f"points per day from the rollups: {daily['count'].to_list()}")

    # DuckDB over the Parquet files (one view per archived table)...
    duck = engine.cold(root=root)
    try:
        print(duck.sql("SELECT date_trunc('day', timestamp) AS day, count(*) AS points, "
                       "round(avg(value), 2) AS avg FROM metrics GROUP BY 1 ORDER BY 1").pl())
    finally:
        duck.close()
    # ...or a lazy Polars scan.
    print(engine.scan_cold("metrics", root=root).group_by("metric_name").len().collect())

    # Bring one day back into the hot tier.
    print("restored", engine.restore("metrics", DAY, DAY + timedelta(days=1), root=root), "rows")

    # What retention would do now (nothing is changed by a dry run), and where the bytes are.
    dry = engine.run_retention(dry_run=True)
    print(f"retention dry run: {dry.chunks_archived} chunks to archive, skipped {len(dry.skipped)}")
    with pl.Config(tbl_cols=-1, tbl_width_chars=200):
        print(engine.storage_report().filter(pl.col("table") == "metrics"))
