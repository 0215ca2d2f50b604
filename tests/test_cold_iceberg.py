"""The cold tier as Apache Iceberg tables: every reader (agts, DuckDB, Polars, pyiceberg) sees the
current snapshot, each point once across tiers, commits that survive crashes and late rows, and
reads as of an earlier snapshot."""

from __future__ import annotations

import hashlib
import re
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

import agts
from agts.archive import _archiver
from tests.test_cli import run_cli

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _points(days: int = 2, per_day: int = 288, start: datetime = DAY0) -> pl.DataFrame:
    """Two metrics × two venues, every 5 minutes per series."""
    rows = []
    for i in range(days * per_day):
        ts = start + i * DAY / per_day
        for metric in ("latency", "pnl"):
            for venue in ("x", "y"):
                rows.append((ts, metric, float(i) + (0.25 if venue == "x" else 0.5), venue))
    return pl.DataFrame(rows, orient="row", schema={
        "timestamp": pl.Datetime("us", "UTC"), "metric_name": pl.String, "value": pl.Float64,
        "venue": pl.String}).with_columns(labels=pl.struct(venue="venue")).drop("venue")


def _plain(frame: pl.DataFrame) -> pl.DataFrame:
    """``timestamp, metric_name, value, venue``, sorted, whatever shape ``labels`` has."""
    labels = frame.schema["labels"]
    if isinstance(labels, pl.Struct):
        venue = pl.col("labels").struct.field("venue")
    elif isinstance(labels, pl.Map):
        venue = pl.col("labels").map.get("venue")
    else:  # a list of key/value structs
        venue = pl.col("labels").list.eval(pl.element().struct.field("value")).list.first()
    return frame.select(pl.col("timestamp").cast(pl.Datetime("us", "UTC")), "metric_name",
                        "value", venue.alias("venue")).sort("timestamp", "metric_name", "venue")


def _iceberg_rows(engine: agts.StorageEngine, **scan: object) -> pl.DataFrame:
    table = engine.iceberg_table("metrics")
    return pl.from_arrow(table.scan(**scan).to_arrow())  # type: ignore[return-value]


def _archive_day_one(arch: agts.StorageEngine) -> pl.DataFrame:
    points = _points()
    arch.insert_metrics_batch(points)
    report = arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert report.units_dropped == 1 and report.failed == []
    return points


def test_every_reader_sees_the_archived_rows_once_and_agts_answers_across_tiers(
        arch: agts.StorageEngine) -> None:
    points = _archive_day_one(arch)
    day_one = _plain(points.filter(pl.col("timestamp") < DAY0 + DAY))
    assert_frame_equal(_plain(_iceberg_rows(arch)), day_one)
    with pytest.MonkeyPatch.context() as env:  # pyiceberg plans the scan (no polars_iceberg)
        env.setenv("POLARS_ICEBERG_PLANNER", "pyiceberg")
        lazy = pl.scan_iceberg(arch.iceberg_table("metrics"))
        assert_frame_equal(_plain(lazy.collect()), day_one)
    assert_frame_equal(_plain(arch.scan_cold("metrics").collect()), day_one)
    with arch.cold() as duck:
        assert_frame_equal(_plain(duck.sql("SELECT * FROM metrics").pl()), day_one)
    # Files are sorted by series then time, and carry the series ids of agts.series.
    files = arch.scan_cold("metrics").collect()
    with arch.db.connection() as conn:
        ids = dict(conn.execute("SELECT labels->>'venue' || metric_name, series_id "
                                "FROM agts.series").fetchall())
    assert files.select(pl.col("labels").map.get("venue") + pl.col("metric_name")
                        ).to_series().replace_strict(ids).to_list() == \
        files.get_column("series_id").to_list()
    assert files.get_column("series_id").to_list() == sorted(files.get_column("series_id"))
    # agts across tiers, with a label filter, against Polars over the points themselves.
    for labels in (None, {"venue": "x"}):
        got = arch.query_metrics("latency", DAY0 + DAY / 2, DAY0 + 3 * DAY / 2, labels,
                                 tiers="all")
        want = points.filter(pl.col("metric_name") == "latency",
                             pl.col("timestamp") >= DAY0 + DAY / 2,
                             pl.col("timestamp") < DAY0 + 3 * DAY / 2)
        if labels:
            want = want.filter(pl.col("labels").struct.field("venue") == "x")
        assert_frame_equal(_plain(got), _plain(want))
        assert got.schema["labels"] == pl.Struct({"venue": pl.String})


def test_a_point_written_again_into_an_archived_range_is_kept_once(
        arch: agts.StorageEngine) -> None:
    """First write wins across tiers as within the hot tier: the archived value stands, and
    counts do not double."""
    points = _archive_day_one(arch)
    day_one = points.filter(pl.col("timestamp") < DAY0 + DAY)
    arch.insert_metrics_batch(day_one.with_columns(pl.col("value") * -1))
    got = arch.query_metrics("pnl", DAY0, DAY0 + 2 * DAY, tiers="all")
    assert_frame_equal(_plain(got), _plain(points.filter(pl.col("metric_name") == "pnl")))
    hourly = arch.query_aggregated("pnl", DAY0, DAY0 + 2 * DAY, bucket="1h",
                                   aggregation=["count", "sum"], tiers="all")
    want = (points.filter(pl.col("metric_name") == "pnl")
            .group_by(pl.col("timestamp").dt.truncate("1h"))
            .agg(pl.len().alias("count"), pl.col("value").sum().alias("sum")).sort("timestamp"))
    assert hourly.get_column("count").to_list() == want.get_column("count").to_list()
    assert hourly.get_column("sum").to_list() == pytest.approx(want.get_column("sum").to_list())


def test_late_rows_after_the_commit_replace_the_units_files_in_one_snapshot(
        arch: agts.StorageEngine) -> None:
    """A range copied (committed) and then written to before its drop is exported again: the new
    snapshot holds the new files instead of the old (no row twice for other engines), the old
    snapshot still reads as it was, and its files stay for it."""
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.export_cold("metrics", DAY0, DAY0 + DAY)
    first = arch.cold_snapshots("metrics")
    old_files = set(arch.iceberg_table("metrics").inspect.files()["file_path"].to_pylist())
    late = _points(days=1, per_day=5).with_columns(pl.col("timestamp") + timedelta(seconds=7))
    arch.insert_metrics_batch(late)
    report = arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert (report.units_exported, report.units_dropped) == (1, 1)
    snaps = arch.cold_snapshots("metrics")
    assert snaps.height == 2 and snaps["operation"].to_list() == ["append", "overwrite"]
    assert snaps["rows"].to_list() == [points.height, points.height + late.height]
    assert_frame_equal(_plain(_iceberg_rows(arch)), _plain(pl.concat([points, late])))
    as_before = arch.scan_cold("metrics", as_of=int(first["snapshot_id"][0])).collect()
    assert_frame_equal(_plain(as_before), _plain(points))
    assert all(Path(f.removeprefix("file://")).exists() for f in old_files)
    new_files = set(arch.iceberg_table("metrics").inspect.files()["file_path"].to_pylist())
    assert not (old_files & new_files)


def test_as_of_reads_the_archive_as_it_was(arch: agts.StorageEngine) -> None:
    points = _points(days=2)
    arch.insert_metrics_batch(points)
    before_any = datetime.now(UTC)
    time.sleep(0.01)
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    between = datetime.now(UTC)
    time.sleep(0.01)
    arch.archive("metrics", DAY0 + DAY, DAY0 + 2 * DAY, drop=True)
    snaps = arch.cold_snapshots("metrics")
    assert snaps.height == 2 and snaps["rows"].to_list() == [points.height // 2, points.height]
    day_one = _plain(points.filter(pl.col("timestamp") < DAY0 + DAY))
    for as_of in (int(snaps["snapshot_id"][0]), between):
        assert_frame_equal(_plain(arch.scan_cold("metrics", as_of=as_of).collect()), day_one)
        with arch.cold(as_of=as_of) as duck:
            assert duck.execute("SELECT count(*) FROM metrics").fetchone() == (day_one.height,)
    assert_frame_equal(_plain(arch.scan_cold("metrics").collect()), _plain(points))
    with pytest.raises(agts.ValidationError, match="before anything of 'metrics' was archived"):
        arch.scan_cold("metrics", as_of=before_any)
    with pytest.raises(agts.ValidationError, match="is not a snapshot of 'metrics'"):
        arch.scan_cold("metrics", as_of=12345)
    with pytest.raises(agts.ValidationError, match="timezone-aware"):
        arch.scan_cold("metrics", as_of=datetime(2026, 1, 1))
    with pytest.raises(agts.ValidationError, match="snapshot id"):
        arch.scan_cold("metrics", as_of="yesterday")


def test_a_failed_commit_leaves_the_unit_exported_and_the_next_run_commits_once(
        arch: agts.StorageEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    points = _points(days=1)
    arch.insert_metrics_batch(points)

    def crash(step: str, unit: object) -> None:
        if step == "committed":
            raise RuntimeError("killed after the Iceberg commit")

    monkeypatch.setattr(_archiver, "STEP_HOOK", crash)
    with pytest.raises(RuntimeError, match="killed after"):
        arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    monkeypatch.setattr(_archiver, "STEP_HOOK", None)
    with arch.db.connection() as conn:  # 0: a commit was tried, its files may be in a snapshot
        assert conn.execute("SELECT state, snapshot_id FROM agts.archive_units").fetchall() == [
            ("exported", 0)]
    first = int(arch.cold_snapshots("metrics")["snapshot_id"][0])
    first_files = arch.iceberg_table("metrics").inspect.files()["file_path"].to_pylist()
    report = arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert (report.units_exported, report.units_dropped) == (0, 1)
    snaps = arch.cold_snapshots("metrics")
    assert snaps.height == 1  # the rerun found its files committed: no second snapshot
    with arch.db.connection() as conn:
        [(state, snapshot)] = conn.execute(
            "SELECT state, snapshot_id FROM agts.archive_units").fetchall()
    assert (state, snapshot) == ("dropped", snaps["snapshot_id"][0])
    assert_frame_equal(_plain(_iceberg_rows(arch)), _plain(points))
    # A late point and a second archive: the first snapshot's files stay for reads as of it.
    arch.insert_metrics_batch(_points(days=1, per_day=1).with_columns(
        pl.col("timestamp") + timedelta(seconds=7)))
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert all(Path(f.removeprefix("file://")).exists() for f in first_files)
    assert arch.scan_cold("metrics", as_of=first).collect().height == points.height


def test_the_same_points_written_again_and_archived_per_metric_are_read_once(
        arch: agts.StorageEngine) -> None:
    """A dropped day, its pnl points written again (other values), then pnl archived on its own:
    two dropped units share point keys; agts keeps the first archived value of each."""
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    pnl = points.filter(pl.col("metric_name") == "pnl")
    arch.insert_metrics_batch(pnl.with_columns(pl.col("value") * -1))
    report = arch.cold_tier.archive("metrics", DAY0, DAY0 + DAY, drop=True, metric_name="pnl")
    assert report.units_dropped == 1 and report.failed == []
    got = arch.query_metrics("pnl", DAY0, DAY0 + DAY, tiers="all")
    assert_frame_equal(_plain(got), _plain(pnl))
    daily = arch.query_aggregated("pnl", DAY0, DAY0 + DAY, "1d", ["count", "sum"], tiers="all")
    assert daily.rows() == [(DAY0, pnl.height, pytest.approx(pnl["value"].sum()))]


def test_a_per_metric_drop_beside_a_copy_of_the_whole_range(arch: agts.StorageEngine) -> None:
    """The whole day copied (still hot), then one metric archived and dropped: the copy is
    stale (it holds that metric's rows too), leaves the snapshot, and stays on disk for it."""
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.export_cold("metrics", DAY0, DAY0 + DAY)
    copy = arch.iceberg_table("metrics").inspect.files()["file_path"].to_pylist()
    report = arch.cold_tier.archive("metrics", DAY0, DAY0 + DAY, drop=True, metric_name="pnl")
    assert (report.units_dropped, report.failed) == (1, [])
    assert_frame_equal(_plain(_iceberg_rows(arch)),
                       _plain(points.filter(pl.col("metric_name") == "pnl")))
    assert all(Path(f.removeprefix("file://")).exists() for f in copy)
    for metric in ("pnl", "latency"):
        got = arch.query_metrics(metric, DAY0, DAY0 + DAY, tiers="all")
        assert_frame_equal(_plain(got), _plain(points.filter(pl.col("metric_name") == metric)))


def test_a_range_whose_hot_rows_went_elsewhere_is_committed_before_it_is_marked_dropped(
        arch: agts.StorageEngine) -> None:
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.export_cold("metrics", DAY0, DAY0 + DAY)
    with arch.db.connection() as conn:
        conn.execute("UPDATE agts.archive_units SET state = 'exported', snapshot_id = NULL")
        conn.execute("DELETE FROM agts.iceberg_tables")
        conn.execute("SELECT drop_chunks('agts.metric_points', older_than => %s)", [DAY0 + DAY])
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    with arch.db.connection() as conn:
        [(state, snapshot)] = conn.execute(
            "SELECT state, snapshot_id FROM agts.archive_units").fetchall()
    assert state == "dropped" and snapshot == arch.cold_snapshots("metrics")["snapshot_id"][0]
    assert_frame_equal(_plain(arch.scan_cold("metrics").collect()), _plain(points))


def test_upgrade_waits_for_the_archive_lock_and_then_says_so(arch: agts.StorageEngine) -> None:
    arch.insert_metrics_batch(_points(days=1))
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    with arch.db.exclusive("archive:agts.metric_points") as held:
        assert held
        with pytest.raises(agts.ArchiveError, match="an archive run holds it") as info:
            arch.upgrade_cold("metrics")
    assert info.value.transient
    assert arch.upgrade_cold("metrics").height == 1


def _to_schema_version_1(engine: agts.StorageEngine) -> list[Path]:
    """Rewrite the archive as agts wrote it before Iceberg: files without ``series_id`` in time
    order, their manifest rows pointing at them, no Iceberg table."""
    root = Path(engine.config.archive.root)
    with engine.db.connection() as conn:
        rows = conn.execute("SELECT unit_id, path FROM agts.archive_files").fetchall()
        written = []
        for unit_id, path in rows:
            table = pq.read_table(root / path).drop_columns(["series_id"])
            table = table.sort_by([("timestamp", "ascending")])
            old = Path(path).with_name(re.sub(r"-[0-9a-f]{10}\.parquet$", ".parquet",
                                              Path(path).name))
            pq.write_table(table, root / old, compression="zstd")
            (root / path).unlink()
            data = (root / old).read_bytes()
            conn.execute("UPDATE agts.archive_files SET path = %s, bytes = %s, sha256 = %s, "
                         "schema_version = 1 WHERE unit_id = %s AND path = %s",
                         [str(old), len(data), hashlib.sha256(data).hexdigest(), unit_id, path])
            written.append(root / old)
        conn.execute("UPDATE agts.archive_units SET snapshot_id = NULL, schema_version = 1")
        conn.execute("DELETE FROM agts.iceberg_tables")
    shutil.rmtree(root / "table=metrics" / "metadata")
    return written


def test_an_archive_of_schema_version_1_is_registered_by_upgrade(
        arch: agts.StorageEngine) -> None:
    points = _points(days=3)
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + 2 * DAY, drop=True)
    old_files = _to_schema_version_1(arch)
    first_two = points.filter(pl.col("timestamp") < DAY0 + 2 * DAY)
    # Before the upgrade agts reads them through its manifest (series found by labels) ...
    got = arch.query_metrics("pnl", DAY0, DAY0 + 3 * DAY, {"venue": "y"}, tiers="all")
    want = points.filter(pl.col("metric_name") == "pnl",
                         pl.col("labels").struct.field("venue") == "y")
    assert_frame_equal(_plain(got), _plain(want))
    # ... other readers see no table yet; a damaged file stops the upgrade, naming it.
    with pytest.raises(agts.ValidationError, match="no archived files"):
        arch.scan_cold("metrics")
    pristine = old_files[0].read_bytes()
    old_files[0].write_bytes(pristine[:-10])
    with pytest.raises(agts.ArchiveError, match=re.escape(old_files[0].name)):
        arch.upgrade_cold()
    old_files[0].write_bytes(pristine)
    run = run_cli("archive", "upgrade", config=arch.config,
                  env_extra={"AGTS_ARCHIVE__ROOT": arch.config.archive.root})
    assert run.returncode == 0, run.stderr
    assert f"metrics: 2 file(s), {first_two.height:,} rows in Iceberg snapshot" in run.stdout
    again = arch.upgrade_cold()
    assert again.rows() == [("metrics", 2, first_two.height,
                             int(arch.cold_snapshots("metrics")["snapshot_id"][0]))]
    assert arch.cold_snapshots("metrics").height == 1  # nothing new to register
    assert sorted(arch.iceberg_table("metrics").inspect.files()["file_path"].to_pylist()) == \
        sorted(f"file://{f}" for f in old_files)  # registered where they are, not rewritten
    scanned = arch.scan_cold("metrics").collect()
    assert scanned["series_id"].null_count() == scanned.height
    assert_frame_equal(_plain(scanned), _plain(first_two))
    # The next range archived (schema version 2) joins them in the same table.
    arch.archive("metrics", DAY0 + 2 * DAY, DAY0 + 3 * DAY, drop=True)
    with arch.cold() as duck:
        assert_frame_equal(_plain(duck.sql("SELECT * FROM metrics").pl()), _plain(points))
    got = arch.query_metrics("pnl", DAY0, DAY0 + 3 * DAY, {"venue": "y"}, tiers="all")
    assert_frame_equal(_plain(got), _plain(want))


def test_an_archive_run_registers_files_archived_before_iceberg(arch: agts.StorageEngine) -> None:
    """A database archived before this version, run again (the demo on its own database, a
    retention job): the run registers the old files, so DuckDB and Polars see them."""
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    _to_schema_version_1(arch)
    report = arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert (report.units_exported, report.units_dropped) == (0, 0)  # nothing new to archive
    with arch.cold() as duck:
        assert duck.execute("SELECT count(*) FROM metrics").fetchone() == (points.height,)
    with arch.db.connection() as conn:
        [(snapshot,)] = conn.execute("SELECT snapshot_id FROM agts.archive_units").fetchall()
    assert snapshot == arch.cold_snapshots("metrics")["snapshot_id"][0]
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert arch.cold_snapshots("metrics").height == 1  # and only once
