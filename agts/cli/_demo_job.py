"""The steps of ``agts demo``: one generated trading day through the public API, end to end.

The day is deterministic: ``--seed S`` generates the 24 hours starting at 12:00 UTC on
``2026-01-01 + S days``, so the same seed always gives the same rows, and storing them again adds
nothing (metric batches carry ids derived from the seed, execution records have natural keys). A
new seed is another day. The day spans two UTC dates: the metric chunks of the first (older) half
are archived to Parquet and dropped from the hot tier, and read back through DuckDB.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from psycopg import sql
from tqdm import tqdm

from agts import positions
from agts._engine import StorageEngine
from agts.execution import ExecutionStore
from agts.sample import MARKETS, SampleDay, trading_day

__all__ = ["DEFAULT_ARCHIVE_DIR", "DemoOptions", "DemoSummary", "day_start", "run_demo"]

log = logging.getLogger(__name__)

#: The first demo day (seed 0); seed S is S days later.
FIRST_DAY = datetime(2026, 1, 1, 12, tzinfo=UTC)
#: Where the cold tier goes without ``--archive-root``. Never ``archive.root``: the configured root
#: belongs to the user's own database, and the demo's files (and manifest) would land among theirs.
DEFAULT_ARCHIVE_DIR = "agts-demo-archive"
_BATCH = 100_000
_NAMESPACE = uuid.UUID("5b0c8f9e-3c1a-4f7e-9a56-0d1e2f3a4b5c")
_TABLES = ("market_quotes", "risk_decisions", "orders", "order_events", "fills",
           "position_snapshots")


@dataclass(frozen=True)
class DemoOptions:
    """What to generate and where to archive it."""

    seed: int = 0
    points: int = 1_000_000
    orders: int = 2_000
    archive_root: str | None = None
    progress: bool | None = None  # None: only on a terminal


@dataclass
class DemoSummary:
    """What the demo did, for the text and JSON reports."""

    database: str
    edition: str
    seed: int
    start: datetime
    end: datetime
    generated: dict[str, int] = field(default_factory=dict)
    new_rows: dict[str, int] = field(default_factory=dict)
    stored: dict[str, int] = field(default_factory=dict)
    ingest_points_per_sec: float | None = None
    metrics_already_stored: bool = False
    aggregates: list[dict[str, Any]] = field(default_factory=list)
    pnl: list[dict[str, Any]] = field(default_factory=list)
    reconcile_differences: int = 0
    archive: dict[str, Any] = field(default_factory=dict)
    steps_sec: dict[str, float] = field(default_factory=dict)
    elapsed_sec: float = 0.0


def day_start(seed: int) -> datetime:
    """Start of the demo day of ``seed``: 12:00 UTC on 2026-01-01 plus ``seed`` days."""
    return FIRST_DAY + timedelta(days=seed)


def archive_root(engine: StorageEngine, given: str | None) -> str:
    """``--archive-root``, else ``./agts-demo-archive`` (made absolute)."""
    root = given or DEFAULT_ARCHIVE_DIR
    if root.startswith("s3://"):
        return root
    return str(Path(root).expanduser().resolve())


@contextmanager
def _step(summary: DemoSummary, name: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    summary.steps_sec[name] = round(time.perf_counter() - began, 3)


def run_demo(engine: StorageEngine, options: DemoOptions,
             announce: Callable[[str], None] = lambda _: None) -> DemoSummary:
    """Run every step on ``engine`` (migrated first) and return the summary.

    ``announce`` receives a line per step (the CLI prints them unless ``--quiet``/``--json``).
    """
    began = time.perf_counter()
    start = day_start(options.seed)
    summary = DemoSummary(database=engine.config.database.describe(),
                          edition=engine.server.edition, seed=options.seed, start=start,
                          end=start + timedelta(days=1))
    with _step(summary, "migrate"):
        engine.migrate()
    announce(f"generating the day {start:%Y-%m-%d %H:%M} UTC + 24 h (seed {options.seed}, "
             f"{options.points:,} metric points, {options.orders:,} orders)")
    with _step(summary, "generate"):
        day = trading_day(seed=options.seed, points=options.points, orders=options.orders,
                          start=start)
        # Client order ids are unique per database, and the sample numbers them from 0 each day.
        day = replace(day, orders=day.orders.with_columns(
            client_order_id=pl.format("{}-{}", pl.lit(f"{start:%Y%m%d}"), "client_order_id")))
    summary.generated = {
        "metrics": day.metrics.height, "market_quotes": day.quotes.height,
        "risk_decisions": day.risk_decisions.height, "orders": day.orders.height,
        "order_events": day.order_events.height + day.orders.height,  # + each order's "new"
        "fills": day.fills.height,
    }
    with _step(summary, "ingest_metrics"):
        _ingest_metrics(engine, day, options, summary)
    store = ExecutionStore(engine)
    with _step(summary, "store_execution"):
        _store_execution(store, day, options, summary)
    announce("deriving positions and PnL from the stored fills, storing 1-minute snapshots")
    with _step(summary, "positions"):
        _positions(store, summary)
    announce("refreshing rollups and running aggregate queries")
    with _step(summary, "aggregates"):
        _aggregates(engine, summary)
    root = archive_root(engine, options.archive_root)
    announce(f"archiving the older half of the day's metrics to Parquet under {root}")
    with _step(summary, "archive"):
        _archive(engine, root, summary)
    with _step(summary, "count"):
        summary.stored = _counts(engine, summary.start, summary.end)
    summary.elapsed_sec = round(time.perf_counter() - began, 3)
    return summary


def _bar(options: DemoOptions, **kwargs: Any) -> tqdm[Any]:
    return tqdm(disable=None if options.progress is None else not options.progress,
                leave=False, dynamic_ncols=True, **kwargs)


def _ingest_metrics(engine: StorageEngine, day: SampleDay, options: DemoOptions,
                    summary: DemoSummary) -> None:
    metrics = day.metrics
    written = duplicates = 0
    already = True
    began = time.perf_counter()
    with _bar(options, total=metrics.height, desc="metrics", unit="pt", unit_scale=True) as bar:
        for index, offset in enumerate(range(0, metrics.height, _BATCH)):
            batch = metrics.slice(offset, _BATCH)
            # The batch id is a function of the seed and size: a re-run is a no-op per batch.
            batch_id = uuid.uuid5(_NAMESPACE, f"{options.seed}/{options.points}/{index}")
            result = engine.insert_metrics_batch(batch, batch_id=batch_id)
            written += result.rows_written
            duplicates += result.duplicates
            already = already and result.already_ingested
            bar.update(batch.height)
    seconds = time.perf_counter() - began
    summary.new_rows["metrics"] = written
    summary.metrics_already_stored = already
    if written:
        summary.ingest_points_per_sec = round(written / seconds, 1)
    log.info("metrics: %d written, %d duplicates in %.2f s", written, duplicates, seconds)


def _store_execution(store: ExecutionStore, day: SampleDay, options: DemoOptions,
                     summary: DemoSummary) -> None:
    # Orders before their fills and events: the database checks that every fill has its order.
    steps: list[tuple[str, Callable[[Any], int], pl.DataFrame]] = [
        ("market_quotes", store.store_quotes, day.quotes),
        ("risk_decisions", store.store_risk_decisions, day.risk_decisions),
        ("orders", store.store_orders, day.orders),
        ("fills", store.store_fills, day.fills),
        ("order_events", store.store_order_events, day.order_events),
    ]
    total = sum(frame.height for _, _, frame in steps)
    with _bar(options, total=total, desc="execution", unit="row", unit_scale=True) as bar:
        for name, write, frame in steps:
            bar.set_postfix_str(name)
            summary.new_rows[name] = write(frame)
            bar.update(frame.height)
    summary.new_rows["order_events"] += summary.new_rows["orders"]  # store_orders adds "new"


def marks_from_quotes(quotes: pl.DataFrame) -> pl.DataFrame:
    """Venue-averaged mid price per market and timestamp: ``timestamp, market, price``."""
    return (quotes.group_by("timestamp", "market").agg(pl.col("mid").mean().alias("price"))
            .sort("market", "timestamp"))


def _positions(store: ExecutionStore, summary: DemoSummary) -> None:
    window = (summary.start, summary.end)
    fills = store.query_fills(*window)
    marks = marks_from_quotes(store.query_quotes(list(MARKETS), *window))
    derived = positions.from_fills(fills, method="average", marks=marks)
    curve = positions.mark_to_market(derived, marks)
    # What the bot would have snapshotted: its position once a minute.
    snapshots = curve.filter(pl.col("timestamp").dt.second() == 0).select(
        "timestamp", "market", "size", pl.col("avg_entry_price").fill_null(0.0),
        "unrealized_pnl", "realized_pnl")
    summary.generated["position_snapshots"] = snapshots.height
    summary.new_rows["position_snapshots"] = store.store_position_snapshots(snapshots)
    stored = pl.concat([store.query_positions(m, *window) for m in MARKETS])
    summary.reconcile_differences = positions.reconcile(stored, derived, tolerance=1e-6).height
    last = curve.group_by("market").agg(pl.all().sort_by("timestamp").last()).sort("market")
    trades = fills.group_by("market").agg(pl.len().alias("fills"),
                                          (pl.col("price") * pl.col("size")).sum().alias("volume"))
    summary.pnl = last.join(trades, on="market", how="left").select(
        "market", "fills", "volume", "size", "realized_pnl", "unrealized_pnl", "fees",
        "net_pnl").to_dicts()


def _aggregates(engine: StorageEngine, summary: DemoSummary) -> None:
    began = time.perf_counter()
    refreshed = engine.refresh_rollups()
    summary.aggregates.append({"query": "refresh_rollups()", "rows": sum(refreshed.values()),
                               "unit": "time ranges materialized",
                               "ms": round((time.perf_counter() - began) * 1000, 1)})
    queries: list[tuple[str, str, str, list[str], list[str]]] = [
        ("latency_ms", "1h", "latency p50/p99 per venue, hourly", ["p50", "p99"], ["venue"]),
        ("fill_rate", "1m", "fill rate per market, 1-minute (rollup)", ["avg", "count"],
         ["market"]),
        ("queue_depth", "1h", "queue depth per venue, hourly (rollup)", ["avg", "max"],
         ["venue"]),
    ]
    for metric, bucket, title, aggs, group_by in queries:
        began = time.perf_counter()
        frame = engine.query_aggregated(metric, summary.start, summary.end, bucket, aggs,
                                        group_by=group_by)
        entry: dict[str, Any] = {"query": title, "rows": frame.height,
                                 "ms": round((time.perf_counter() - began) * 1000, 1)}
        if metric == "latency_ms" and frame.height:
            entry["by"] = (frame.group_by("venue").agg(pl.col("p99").max().round(2))
                           .sort("venue").rows())
        summary.aggregates.append(entry)


def _archive(engine: StorageEngine, root: str, summary: DemoSummary) -> None:
    first_midnight = summary.start.replace(hour=0)
    # Whole chunks inside [midnight, next midnight): the metric points of the day's first half.
    upto = first_midnight + timedelta(days=1)
    report = engine.archive("metrics", first_midnight, upto, drop=True, root=root)
    with engine.db.connection() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(rows), 0), min(root) "
            "FROM agts.archive_manifest WHERE table_name = 'metrics' AND state = 'dropped' "
            "AND range_start >= %s AND range_end <= %s", (first_midnight, upto)).fetchone()
    files, size, rows, used_root = row if row else (0, 0, 0, None)
    used_root = used_root or root
    summary.archive = {
        "root": used_root, "range": [first_midnight, upto], "files": int(files),
        "bytes": int(size), "rows": int(rows), "files_written_now": report.files_written,
        "rows_dropped_now": report.rows_dropped, "skipped": [list(s) for s in report.skipped],
    }
    if not files:
        return
    window = (summary.start, summary.end)
    cold = engine.query_cold("metrics", *window, root=used_root)
    duck = engine.cold(root=used_root)
    try:
        began = time.perf_counter()
        per_metric = duck.sql(
            "SELECT metric_name, count(*) AS points, round(avg(value), 3) AS avg "
            "FROM metrics WHERE timestamp >= $start AND timestamp < $end "
            "GROUP BY metric_name ORDER BY metric_name",
            params={"start": summary.start, "end": upto}).fetchall()
        duck_ms = (time.perf_counter() - began) * 1000
    finally:
        duck.close()
    hot = _hot_points(engine, summary.start, summary.end)
    summary.archive.update({
        "duckdb_ms": round(duck_ms, 1), "duckdb_points": sum(r[1] for r in per_metric),
        "duckdb_by_metric": [list(r) for r in per_metric], "cold_rows": cold.height,
        "hot_rows": hot,
    })


def _hot_points(engine: StorageEngine, start: datetime, end: datetime) -> int:
    with engine.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM agts.metric_points WHERE time >= %s AND time < %s",
                           (start, end)).fetchone()
    return int(row[0]) if row else 0


def _counts(engine: StorageEngine, start: datetime, end: datetime) -> dict[str, int]:
    """Rows of the demo day per table in the hot tier (metrics: hot points)."""
    counts = {"metrics": _hot_points(engine, start, end)}
    with engine.db.connection() as conn:
        for table in _TABLES:
            query = sql.SQL("SELECT count(*) FROM agts.{} WHERE timestamp >= %s AND timestamp < %s")
            row = conn.execute(query.format(sql.Identifier(table)), (start, end)).fetchone()
            counts[table] = int(row[0]) if row else 0
    return counts
