"""Retention drops exactly what the policy says, and nothing the cold tier has not verified."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import agts
from agts.db import conninfo

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def _day(days_ago: int, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days_ago)


def _points(days_ago: list[int], metrics: tuple[str, ...] = ("latency", "pnl"),
            now: datetime = NOW) -> pl.DataFrame:
    rows = []
    for ago in days_ago:
        for metric in metrics:
            for i in range(24):
                rows.append((_day(ago, now) + timedelta(hours=i), metric, float(ago * 100 + i)))
    frame = pl.DataFrame(rows, schema={"timestamp": pl.Datetime("us", "UTC"), "metric_name": pl.String,
                                       "value": pl.Float64}, orient="row")
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias("labels"))


def _ago(frame: pl.DataFrame) -> list[int]:
    return sorted({(NOW.date() - t.date()).days for t in frame["timestamp"]}, reverse=True)


def _hot_days(engine: agts.StorageEngine, metric: str | None = None,
              now: datetime = NOW) -> list[int]:
    with engine.db.connection() as conn:
        rows = conn.execute(
            "SELECT DISTINCT date_trunc('day', timestamp, 'UTC') FROM agts.metrics "
            "WHERE %s::text IS NULL OR metric_name = %s ORDER BY 1", [metric, metric]).fetchall()
    return sorted(((now - r[0]).days for r in rows), reverse=True)


def _engine(engine: agts.StorageEngine, root: Path | None, **retention: object) -> agts.StorageEngine:
    archive = {"root": str(root)} if root is not None else {}
    return agts.connect(engine.config.with_overrides(retention=retention, archive=archive))


DAYS = [120, 100, 91, 89, 40, 10, 1]


def test_nothing_unarchived_is_dropped_without_an_archive_root(any_edition: agts.StorageEngine) -> None:
    any_edition.insert_metrics_batch(_points(DAYS))
    with _engine(any_edition, None, metrics_retention_days=90) as eng:
        report = eng.run_retention(now=NOW)
    assert report.chunks_dropped == 0
    assert _hot_days(any_edition) == DAYS
    assert any("archive_before_drop is on and no archive.root" in why for _, why in report.skipped)


def test_archive_then_drop_exactly_the_expired_chunks(any_edition: agts.StorageEngine,
                                                     tmp_path: Path) -> None:
    any_edition.insert_metrics_batch(_points(DAYS))
    with _engine(any_edition, tmp_path, metrics_retention_days=90) as eng:
        dry = eng.run_retention(now=NOW, dry_run=True)
        assert (dry.chunks_archived, dry.chunks_dropped) == (3, 3)
        assert _hot_days(any_edition) == DAYS
        report = eng.run_retention(now=NOW)
        assert (report.chunks_archived, report.chunks_dropped) == (3, 3)
        assert report.rows_dropped == report.rows_archived == 3 * 48
        assert _hot_days(any_edition) == [89, 40, 10, 1]
        cold = eng.query_cold("metrics", _day(200), NOW)
        assert _ago(cold) == [120, 100, 91]
        assert eng.run_retention(now=NOW).chunks_dropped == 0  # idempotent
        if eng.server.community:
            assert report.chunks_compressed > 0
            with eng.db.connection() as conn:
                jobs = conn.execute("SELECT proc_name FROM timescaledb_information.jobs "
                                    "WHERE hypertable_name = 'metric_points'").fetchall()
            assert jobs == [("policy_compression",)]  # no native retention: it would not archive
        else:
            assert report.chunks_compressed == 0



def test_rollups_are_refreshed_before_points_leave_the_hot_tier(any_edition: agts.StorageEngine,
                                                                tmp_path: Path) -> None:
    frame = _points(DAYS)
    any_edition.insert_metrics_batch(frame)
    with _engine(any_edition, tmp_path, metrics_retention_days=90) as eng:
        report = eng.run_retention(now=NOW)
        assert set(report.rollups_refreshed) == {"rollup_1m", "rollup_1h"}
        assert _hot_days(any_edition) == [89, 40, 10, 1]
        # the hourly aggregates of the dropped days still come from the hot tier's rollup
        hourly = eng.query_aggregated("latency", _day(120), _day(119), "1h", ["avg", "count"])
        want = frame.filter((pl.col("metric_name") == "latency")
                            & (pl.col("timestamp") < _day(119)) & (pl.col("timestamp") >= _day(120)))
        assert hourly.get_column("avg").to_list() == want.get_column("value").to_list()
        assert hourly.get_column("count").to_list() == [1] * 24
        assert eng.run_retention(now=NOW).rollups_refreshed == {}  # nothing expires any more



def test_a_late_point_for_an_archived_hour_keeps_other_series_rollups(
        engine: agts.StorageEngine, tmp_path: Path) -> None:
    # Apache: refreshes upsert per (bucket, series); a delete of the whole bucket range would take
    # the aggregates of every series of that hour with it, their raw points being archived.
    if engine.server.community:
        pytest.skip("Apache-edition rollup tables: a continuous aggregate recomputes the whole "
                    "bucket from the raw points left (documented in the README)")
    frame = _points(DAYS)
    engine.insert_metrics_batch(frame)
    with _engine(engine, tmp_path, metrics_retention_days=90) as eng:
        eng.run_retention(now=NOW)
        late = _day(120) + timedelta(hours=3, minutes=30)
        eng.insert_metrics_batch(pl.DataFrame({
            "timestamp": [late], "metric_name": ["latency"], "value": [-1.0],
            "labels": [None]}, schema=frame.schema))
        eng.refresh_rollups()
        pnl = eng.query_aggregated("pnl", _day(120), _day(119), "1h", "avg")
        assert pnl.get_column("avg").to_list() == [12000.0 + i for i in range(24)]
        # exact over hot and cold together, the late point included
        exact = eng.query_aggregated("latency", _day(120), _day(119), "1h", "count", tiers="all")
        assert exact.get_column("count").to_list() == [1, 1, 1, 2] + [1] * 20
        again = eng.run_retention(now=NOW)  # the late point stays hot, and the report says so
        assert again.chunks_dropped == 0
        assert [why for what, why in again.skipped if what.startswith("metrics [")] == [
            "1 row(s) written after this range was archived and dropped stay in the hot tier; "
            "tiers='all' reads them with the archive"]


def test_without_archive_before_drop_chunks_are_dropped(any_edition: agts.StorageEngine) -> None:
    # Real time here: on Community the run installs the native retention job, which drops by the
    # clock, in the background, possibly before the run gets to the chunks itself.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    any_edition.insert_metrics_batch(_points(DAYS, now=today))
    with _engine(any_edition, None, metrics_retention_days=90, archive_before_drop=False) as eng:
        report = eng.run_retention()
        assert _hot_days(any_edition, now=today) == [89, 40, 10, 1]
        if eng.server.community:
            assert any("retention policy on agts.metric_points" in j for j in report.native_jobs)
            assert report.chunks_dropped <= 3  # the rest went with the native job
        else:
            assert report.chunks_dropped == 3
            assert report.rows_dropped == 3 * 48


def test_per_metric_retention_archives_and_deletes_by_series(engine: agts.StorageEngine,
                                                            tmp_path: Path) -> None:
    engine.insert_metrics_batch(_points(DAYS))
    with _engine(engine, tmp_path, metrics_retention_days=90,
                 per_metric_days={"latency": 30, "pnl": 365}) as eng:
        report = eng.run_retention(now=NOW)
        assert _hot_days(engine, "latency") == [10, 1]
        assert _hot_days(engine, "pnl") == [89, 40, 10, 1]
        assert report.rows_deleted == 2 * 24  # latency of days 89 and 40
        assert [what for what, why in report.skipped if "longer than metrics_retention_days" in why
                ] == ["metric 'pnl'"]
        cold = eng.query_cold("metrics", _day(200), NOW, metric_name="latency")
        assert _ago(cold) == [120, 100, 91, 89, 40]
        every = pl.concat([
            eng.query_cold("metrics", _day(200), NOW).select("timestamp", "metric_name"),
            eng.query_metrics("latency", _day(200), NOW).select("timestamp", "metric_name"),
            eng.query_metrics("pnl", _day(200), NOW).select("timestamp", "metric_name"),
        ])
        assert every.height == len(DAYS) * 48
        assert every.is_unique().all()
        with eng.cold() as duck:
            assert duck.execute("SELECT count(*), count(DISTINCT (timestamp, metric_name)) "
                                "FROM metrics").fetchone() == (5 * 24 + 3 * 24,) * 2


def test_execution_tables_use_their_own_horizon(engine: agts.StorageEngine, tmp_path: Path) -> None:
    with engine.db.connection() as conn:
        conn.execute(
            """
            INSERT INTO agts.position_snapshots (timestamp, market, size, avg_entry_price)
            SELECT %s::timestamptz - d * interval '1 day', 'BTC-USD', d, 100
            FROM unnest(ARRAY[400, 380, 100, 3]) AS d
            """, [NOW])
    with _engine(engine, tmp_path, execution_retention_days=365) as eng:
        report = eng.run_retention(now=NOW)
        with eng.db.connection() as conn:
            left = [r[0] for r in conn.execute(
                "SELECT size FROM agts.position_snapshots ORDER BY timestamp").fetchall()]
        assert left == [100.0, 3.0]
        assert report.rows_dropped == 2
        cold = eng.query_cold("position_snapshots", _day(500), NOW)
        assert cold["size"].to_list() == [400.0, 380.0]


def test_storage_report_tiers(engine: agts.StorageEngine, tmp_path: Path) -> None:
    engine.insert_metrics_batch(_points(DAYS))
    with _engine(engine, tmp_path, metrics_retention_days=90) as eng:
        eng.run_retention(now=NOW)
        chunks = eng.storage_report(by="chunk")
        table = eng.storage_report()
    assert chunks.columns == ["table", "tier", "chunk", "range_start", "range_end", "rows", "bytes",
                              "bytes_uncompressed"]
    metrics = chunks.filter(pl.col("table") == "metrics")
    tiers = dict(metrics.group_by("tier").len().rows())
    if engine.server.community:  # compressed by the run or by the native job (on the real clock)
        assert tiers.pop("cold") == 3 and sum(tiers.values()) == 4 and set(tiers) <= {"hot", "warm"}
    else:
        assert tiers == {"cold": 3, "hot": 4}
    assert metrics.filter(pl.col("tier") == "cold")["rows"].to_list() == [48, 48, 48]
    row = table.filter(pl.col("table") == "metrics").to_dicts()[0]
    assert row["cold_bytes"] > 0 and row["hot_bytes"] + row["warm_bytes"] > 0
    assert row["cold_rows"] == 144
    assert row["retention_days"] == 90
    assert table.schema["projected_bytes_30d"] == pl.Int64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"by": "tier"}, r"by must be one of \('table', 'chunk'\), got 'tier'", id="by"),
        pytest.param({"growth_days": 0}, r"growth_days must be a positive integer, got 0",
                     id="growth"),
    ],
)
def test_storage_report_argument_errors(engine: agts.StorageEngine, kwargs: dict[str, object],
                                        message: str) -> None:
    with pytest.raises(agts.ValidationError, match=message):
        engine.storage_report(**kwargs)  # type: ignore[arg-type]


def test_cli_retention_and_storage_json(engine: agts.StorageEngine) -> None:
    engine.insert_metrics_batch(_points([1]))
    dsn = conninfo(engine.config.database)
    out = subprocess.run([sys.executable, "-m", "agts.cli", "--dsn", dsn, "retention", "run",
                          "--dry-run", "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["dry_run"] is True and report["chunks_dropped"] == 0
    out = subprocess.run([sys.executable, "-m", "agts.cli", "--dsn", dsn, "storage", "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "metrics" in {r["table"] for r in json.loads(out.stdout)}
    bad = subprocess.run([sys.executable, "-m", "agts.cli", "--dsn", dsn, "retention", "run",
                          "--every", "soon"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "interval must be a positive number" in bad.stderr
