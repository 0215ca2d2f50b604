"""Cold tier: export → verify → drop keeps every row exactly once, including after crashes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts
from agts.archive import _archiver
from agts.db import conninfo

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)


def _points(days: int = 3, per_day: int = 720, start: datetime = DAY0) -> pl.DataFrame:
    n = days * per_day
    step = timedelta(days=1) / per_day
    ts = [start + i * step for i in range(n)]
    return pl.DataFrame({
        "timestamp": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
        "metric_name": ["latency" if i % 3 else "pnl" for i in range(n)],
        "value": np.arange(n, dtype=float) * 0.5,
        "labels": [{"venue": "x" if i % 2 else "y"} for i in range(n)],
    })


def _hot(engine: agts.StorageEngine) -> pl.DataFrame:
    with engine.db.adbc() as conn, conn.cursor() as cur:
        cur.execute("SELECT timestamp, metric_name, value, labels->>'venue' AS venue FROM agts.metrics")
        return pl.from_arrow(cur.fetch_arrow_table())  # type: ignore[return-value]


def _all_rows(engine: agts.StorageEngine) -> pl.DataFrame:
    cold = engine.query_cold("metrics", DAY0 - timedelta(days=30), DAY0 + timedelta(days=30))
    cold = cold.with_columns(
        pl.col("labels").list.eval(pl.element().struct.field("value")).list.first().alias("venue")
        if cold.schema["labels"] != pl.Map(pl.String, pl.String) else
        pl.col("labels").map.get("venue").alias("venue"))
    both = pl.concat([_hot(engine), cold.select("timestamp", "metric_name", "value", "venue")])
    return both.sort("timestamp", "metric_name", "venue")


def _expected(points: pl.DataFrame) -> pl.DataFrame:
    return points.select(
        "timestamp", "metric_name", "value",
        pl.col("labels").struct.field("venue").alias("venue"),
    ).sort("timestamp", "metric_name", "venue")


def test_export_verify_drop_moves_every_row_once(arch: agts.StorageEngine, tmp_path: Path) -> None:
    points = _points()
    arch.insert_metrics_batch(points)
    with arch.db.connection() as conn:
        before = conn.execute(
            "SELECT metric_name, date_trunc('day', timestamp, 'UTC')::date, count(*), sum(value), "
            "min(value), max(value) FROM agts.metrics GROUP BY 1, 2 ORDER BY 1, 2").fetchall()

    report = arch.archive("metrics", DAY0, DAY0 + timedelta(days=3), drop=True)

    assert (report.units_exported, report.units_verified, report.units_dropped) == (3, 3, 3)
    assert report.rows_exported == report.rows_dropped == points.height
    assert report.skipped == []
    assert _hot(arch).height == 0
    assert_frame_equal(_all_rows(arch), _expected(points))
    with arch.cold() as duck:
        after = duck.execute(
            "SELECT metric_name, timestamp::date, count(*), sum(value), min(value), max(value) "
            "FROM metrics GROUP BY 1, 2 ORDER BY 1, 2").fetchall()
    assert after == before
    files = sorted(p.relative_to(tmp_path / "archive").as_posix()
                   for p in (tmp_path / "archive").rglob("*.parquet"))
    assert [re.sub(r"-[0-9a-f]{10}\.parquet$", "", f) for f in files] == [
        f"table=metrics/date=2026-01-0{d}/metrics-2026010{d}T000000Z-2026010{d + 1}T000000Z"
        for d in (1, 2, 3)]
    assert not list((tmp_path / "archive").rglob("_manifest.json"))
    # The Iceberg table holds exactly these files, one snapshot per verified unit.
    table = arch.iceberg_table("metrics")
    assert sorted(table.inspect.files()["file_path"].to_pylist()) == [
        f"file://{tmp_path / 'archive'}/{f}" for f in files]
    assert arch.cold_snapshots("metrics")["rows"].to_list() == [720, 1440, 2160]
    with arch.db.connection() as conn:
        states = conn.execute("SELECT state, snapshot_id FROM agts.archive_units ORDER BY 1"
                              ).fetchall()
    assert [s for s, _ in states] == ["dropped"] * 3 and all(i is not None for _, i in states)


def test_parquet_layout_types_and_polars_scan(arch: agts.StorageEngine) -> None:
    arch.insert_metrics_batch(_points(days=1))
    arch.export_cold("metrics", DAY0, DAY0 + timedelta(days=1))
    lazy = arch.scan_cold("metrics")
    schema = lazy.collect_schema()
    assert schema["timestamp"] == pl.Datetime("us", "UTC")
    assert schema["value"] == pl.Float64
    assert schema["series_id"] == pl.Int32
    assert "date" not in schema  # Iceberg partitions by day(timestamp): filter on timestamp
    totals = lazy.group_by("metric_name").agg(pl.len()).sort("metric_name").collect()
    assert totals.rows() == [("latency", 480), ("pnl", 240)]
    # copy only: the hot tier still has every row and the cold complement is empty
    assert _hot(arch).height == 720
    assert arch.query_cold("metrics", DAY0, DAY0 + timedelta(days=1)).height == 0


class Crash(Exception):
    pass


STEPS = ["claimed", "written", "exported", "verified", "dropped"]


@pytest.mark.parametrize("step", STEPS)
def test_crash_between_steps_then_rerun(arch: agts.StorageEngine, step: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    points = _points(days=2)
    arch.insert_metrics_batch(points)
    seen: list[str] = []

    def hook(name: str, unit: object) -> None:
        seen.append(name)
        if name == step and seen.count(step) == 2:  # the second unit dies at this step
            raise Crash(step)

    monkeypatch.setattr(_archiver, "STEP_HOOK", hook)
    with pytest.raises(Crash):
        arch.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True)
    monkeypatch.setattr(_archiver, "STEP_HOOK", None)
    # between the crash and the rerun nothing is lost or doubled either
    assert_frame_equal(_all_rows(arch), _expected(points))
    arch.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True)
    assert _hot(arch).height == 0
    assert_frame_equal(_all_rows(arch), _expected(points))
    with arch.cold() as duck:
        assert duck.execute("SELECT count(*) FROM metrics").fetchone() == (points.height,)


def test_a_failed_parquet_write_leaves_no_file_and_a_rerun_completes(
        arch: agts.StorageEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups are encoded on a writer thread while the next rows are read: its error reaches
    the caller, no file of the failed unit appears under a final name, and nothing is lost."""
    from agts.archive import _export

    points = _points(days=2)
    arch.insert_metrics_batch(points)
    flush = _export._DateFile.flush
    calls: list[int] = []

    def failing(self: _export._DateFile) -> None:
        calls.append(self.pending_rows)
        if len(calls) == 3:
            raise OSError("no space left on device")
        flush(self)

    monkeypatch.setattr(_export._DateFile, "flush", failing)
    with pytest.raises(agts.ArchiveError, match="no space left on device"):
        arch.export_cold("metrics", DAY0, DAY0 + timedelta(days=2), row_group_rows=100)
    monkeypatch.setattr(_export._DateFile, "flush", flush)
    assert len(calls) == 3  # the first unit was written; the second failed on the writer thread
    written = [p.name for p in (tmp_path / "archive").rglob("*.parquet")]
    assert [re.sub(r"-[0-9a-f]{10}\.parquet$", "", w) for w in written] == [
        "metrics-20260101T000000Z-20260102T000000Z"]
    assert _hot(arch).height == points.height
    report = arch.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True,
                          row_group_rows=100)
    assert (report.rows_exported, report.units_dropped) == (720, 2)  # only the failed unit again
    assert _hot(arch).height == 0
    assert_frame_equal(_all_rows(arch), _expected(points))


@pytest.mark.parametrize("step", ["written", "committed", "verified"])
def test_killed_process_then_rerun(arch: agts.StorageEngine, step: str) -> None:
    points = _points(days=2)
    arch.insert_metrics_batch(points)
    script = textwrap.dedent(f"""
        import os, signal, agts
        from agts.config import StorageConfig
        from agts.archive import _archiver
        def hook(name, unit):
            if name == {step!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        _archiver.STEP_HOOK = hook
        cfg = StorageConfig.from_dsn(os.environ["ARCHIVE_TEST_DSN"],
                                     archive={{"root": os.environ["ARCHIVE_TEST_ROOT"]}})
        with agts.connect(cfg) as engine:
            engine.archive("metrics", "2026-01-01", "2026-01-03", drop=True)
    """)
    env = dict(os.environ, ARCHIVE_TEST_DSN=conninfo(arch.config.database),
               ARCHIVE_TEST_ROOT=str(arch.config.archive.root))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert_frame_equal(_all_rows(arch), _expected(points))
    arch.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True)
    assert _hot(arch).height == 0
    assert_frame_equal(_all_rows(arch), _expected(points))


def test_late_rows_after_export_are_archived_before_drop(arch: agts.StorageEngine) -> None:
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.export_cold("metrics", DAY0, DAY0 + timedelta(days=1))
    late = _points(days=1, per_day=7).with_columns(
        pl.col("timestamp") + timedelta(seconds=1), pl.lit(-1.0).alias("value"))
    arch.insert_metrics_batch(late)
    report = arch.archive("metrics", DAY0, DAY0 + timedelta(days=1), drop=True)
    assert report.units_exported == 1  # exported again: the late rows arrived after the copy
    assert report.rows_dropped == points.height + late.height
    assert_frame_equal(_all_rows(arch), _expected(pl.concat([points, late])))


def test_restore_is_idempotent_and_leaves_no_overlap(arch: agts.StorageEngine) -> None:
    points = _points(days=2)
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True)
    assert arch.restore("metrics", DAY0, DAY0 + timedelta(days=1)) == points.height // 2
    assert arch.restore("metrics", DAY0, DAY0 + timedelta(days=1)) == 0
    assert _hot(arch).height == points.height // 2
    assert_frame_equal(_all_rows(arch), _expected(points))
    assert arch.restore("metrics", DAY0, DAY0 + timedelta(days=2)) == points.height // 2
    assert arch.query_cold("metrics", DAY0, DAY0 + timedelta(days=2)).height == 0
    assert_frame_equal(_hot(arch).sort("timestamp", "metric_name", "venue"), _expected(points))
    # restored ranges are verified units: archiving again drops them without a new export
    report = arch.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True)
    assert (report.units_exported, report.units_dropped) == (0, 2)
    assert_frame_equal(_all_rows(arch), _expected(points))


def test_execution_table_round_trip_with_uuid_and_jsonb(arch: agts.StorageEngine) -> None:
    with arch.db.connection() as conn:
        conn.execute(
            """
            INSERT INTO agts.risk_decisions (id, timestamp, policy, decision, reason, details)
            SELECT gen_random_uuid(), '2026-01-05'::timestamptz + i * interval '1 hour',
                   'max_position', CASE WHEN i % 2 = 0 THEN 'allow' ELSE 'deny' END, NULL,
                   jsonb_build_object('limit', i, 'tags', jsonb_build_array('a', 'b'))
            FROM generate_series(0, 199) AS i
            """)
        before = conn.execute("SELECT id::text, timestamp, decision, details FROM "
                              "agts.risk_decisions ORDER BY timestamp").fetchall()
        start, end = conn.execute("SELECT min(range_start), max(range_end) FROM "
                                  "timescaledb_information.chunks WHERE hypertable_name = "
                                  "'risk_decisions'").fetchone()  # type: ignore[misc]
    report = arch.archive("risk_decisions", start, end, drop=True)
    assert report.rows_dropped == 200
    cold = arch.query_cold("risk_decisions", start, end)
    assert cold.schema["id"] == pl.String and cold.schema["timestamp"] == pl.Datetime("us", "UTC")
    assert cold.select("id", "timestamp", "decision").rows() == [r[:3] for r in before]
    assert json.loads(cold["details"][3]) == {"limit": 3, "tags": ["a", "b"]}
    with arch.cold() as duck:
        assert duck.execute("SELECT count(*), count(DISTINCT timestamp::date) FROM risk_decisions"
                            ).fetchone() == (200, 9)
    assert arch.restore("risk_decisions", start, end) == 200
    with arch.db.connection() as conn:
        assert conn.execute("SELECT id::text, timestamp, decision, details FROM "
                            "agts.risk_decisions ORDER BY timestamp").fetchall() == before


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda e: e.archive("nope"), r"table must be one of .*got 'nope'",
                     id="unknown-table"),
        pytest.param(lambda e: e.archive("metrics", row_group_rows=0),
                     r"row_group_rows must be a positive integer, got 0", id="row-groups"),
        pytest.param(lambda e: e.archive("metrics", "2026-01-02", "2026-01-01"),
                     r"end must be after start", id="reversed-range"),
        pytest.param(lambda e: e.archive("metrics", "x"), r"start must be a datetime",
                     id="bad-start"),
    ],
)
def test_archive_argument_errors(arch: agts.StorageEngine, call: object, message: str) -> None:
    with pytest.raises(agts.StorageError, match=message):
        call(arch)  # type: ignore[operator]


def test_archive_without_root_names_the_setting(engine: agts.StorageEngine) -> None:
    with pytest.raises(agts.ConfigError, match=r"no archive root: set archive.root"):
        engine.archive("metrics")
