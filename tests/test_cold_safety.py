"""The cold tier does not trust what it reads: a replaced data file, a manifest row that points
outside the root, and a folder name made to be SQL are refused, and nothing else is touched."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import agts
from tests.test_cli import run_cli

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def _points(days: int = 2, per_day: int = 240) -> pl.DataFrame:
    n = days * per_day
    return pl.DataFrame({
        "timestamp": pl.Series([DAY0 + i * DAY / per_day for i in range(n)],
                               dtype=pl.Datetime("us", "UTC")),
        "metric_name": ["latency"] * n,
        "value": [float(i) for i in range(n)],
        "labels": [{"venue": "x" if i % 2 else "y"} for i in range(n)],
    })


def _hot_count(engine: agts.StorageEngine) -> int:
    with engine.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()
    assert row is not None
    return int(row[0])


def _first_file(engine: agts.StorageEngine, root: Path) -> Path:
    with engine.db.connection() as conn:
        row = conn.execute("SELECT path FROM agts.archive_files ORDER BY min_time LIMIT 1").fetchone()
    assert row is not None
    return root / row[0]


def _archived(arch: agts.StorageEngine) -> tuple[Path, pl.DataFrame]:
    points = _points()
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + 2 * DAY, drop=True)
    assert _hot_count(arch) == 0
    return Path(arch.config.archive.root), points


def test_a_replaced_data_file_is_refused_by_every_reader_and_by_restore(
        arch: agts.StorageEngine) -> None:
    """A valid Parquet file with other values under an archived file's name: its rows are not
    read (they were restored into the hot tier before), and the error names the file."""
    root, points = _archived(arch)
    good = arch.query_cold("metrics", DAY0, DAY0 + 2 * DAY)
    assert good.height == points.height
    path = _first_file(arch, root)
    original, table = path.read_bytes(), pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value",
                                    pc.add(table.column("value"), 1000.0)), path)
    arch.clear_query_cache()
    calls = {
        "query_cold": lambda: arch.query_cold("metrics", DAY0, DAY0 + 2 * DAY),
        "query_metrics": lambda: arch.query_metrics("latency", DAY0, DAY0 + DAY, tiers="all"),
        "query_aggregated": lambda: arch.query_aggregated(
            "latency", DAY0, DAY0 + DAY, "1h", "avg", tiers="cold"),
        "restore": lambda: arch.restore("metrics", DAY0, DAY0 + 2 * DAY),
    }
    for name, call in calls.items():
        with pytest.raises(agts.ArchiveError, match="sha256|bytes") as info:
            call()
        assert path.name in str(info.value), name
    assert _hot_count(arch) == 0  # restore changed nothing: not even the intact day came back
    # Put back, it reads again: the check is of the file, not a flag left behind.
    path.write_bytes(original)
    arch.clear_query_cache()
    assert arch.query_cold("metrics", DAY0, DAY0 + 2 * DAY).equals(good)
    assert arch.restore("metrics", DAY0, DAY0 + 2 * DAY) == points.height


@pytest.mark.parametrize("bad", ["../victim.txt", "/etc/passwd", "table=metrics/../../victim.txt",
                                 "table=metrics//x.parquet", "table=metrics\\..\\victim.txt"])
def test_a_manifest_path_outside_the_root_is_refused_and_nothing_outside_is_touched(
        arch: agts.StorageEngine, tmp_path: Path, bad: str) -> None:
    root, _ = _archived(arch)
    victim = root.parent / "victim.txt"
    victim.write_text("not agts's")
    with arch.db.connection() as conn:
        conn.execute("UPDATE agts.archive_files SET path = %s WHERE path = (SELECT path FROM "
                     "agts.archive_files ORDER BY min_time LIMIT 1)", [bad])
    for call in (lambda: arch.query_cold("metrics", DAY0, DAY0 + 2 * DAY),
                 lambda: arch.restore("metrics", DAY0, DAY0 + 2 * DAY)):
        with pytest.raises(agts.ArchiveError, match="refusing the archive path") as info:
            call()
        assert repr(bad) in str(info.value)
    assert victim.read_text() == "not agts's" and _hot_count(arch) == 0


def test_a_tampered_path_of_a_superseded_copy_is_not_deleted(arch: agts.StorageEngine) -> None:
    """Archiving one metric with drop (what per-metric retention does) deletes the files of the
    whole-range copy it makes stale: a manifest row pointing outside the root is refused, not
    deleted."""
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.export_cold("metrics", DAY0, DAY0 + DAY)
    root = Path(arch.config.archive.root)
    victim = root.parent / "victim.txt"
    victim.write_text("not agts's")
    with arch.db.connection() as conn:
        conn.execute("UPDATE agts.archive_files SET path = '../victim.txt'")
    with pytest.raises(agts.ArchiveError, match="refusing the archive path '../victim.txt'"):
        arch.cold_tier.archive("metrics", DAY0, DAY0 + DAY, drop=True, metric_name="latency")
    assert victim.read_text() == "not agts's"


def test_names_made_to_be_sql_in_folders_or_the_catalog_are_passed_over(
        arch: agts.StorageEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Readers list tables from the Iceberg catalog, never from folders; a catalog row whose name
    is not one agts writes is passed over with a warning, and no SQL is built from either."""
    root, points = _archived(arch)
    out = tmp_path / "f.csv"
    evil = (f"x\" AS SELECT 1; COPY (SELECT 42) TO '{out}'; CREATE VIEW \"y")
    (root / f"table={evil}" / "date=2026-01-01").mkdir(parents=True)
    pq.write_table(pq.read_table(_first_file(arch, root)),
                   root / f"table={evil}" / "date=2026-01-01" / "part.parquet")
    with arch.db.connection() as conn:
        conn.execute("INSERT INTO agts.iceberg_tables (catalog_name, table_namespace, table_name, "
                     "metadata_location, iceberg_type) SELECT catalog_name, table_namespace, %s, "
                     "metadata_location, iceberg_type FROM agts.iceberg_tables", [evil])
    with caplog.at_level(logging.WARNING, logger="agts"):
        con = arch.cold()
    try:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() "
                                           "WHERE NOT internal").fetchall()}
        assert views == {"metrics"}
        assert con.execute("SELECT count(*) FROM metrics").fetchone() == (points.height,)
    finally:
        con.close()
    assert not out.exists()
    assert any("is not one agts writes" in r.getMessage() for r in caplog.records)
    with pytest.raises(agts.ValidationError, match="table must be one of"):
        arch.scan_cold(evil)


def test_a_catalog_file_outside_the_root_is_refused(arch: agts.StorageEngine,
                                                    tmp_path: Path) -> None:
    """A snapshot that lists a data file elsewhere (a tampered or foreign commit) is refused by
    every reader, naming the file; nothing is read from it."""
    root, _ = _archived(arch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    foreign = elsewhere / "planted.parquet"
    pq.write_table(pq.read_table(_first_file(arch, root)), foreign)
    arch.iceberg_table("metrics").add_files([f"file://{foreign}"])
    for call in (arch.cold, lambda: arch.scan_cold("metrics")):
        with pytest.raises(agts.ArchiveError, match="not inside the archive root") as info:
            call()
        assert str(foreign) in str(info.value)


def test_verify_names_each_file_that_is_not_the_one_recorded(arch: agts.StorageEngine) -> None:
    root, _ = _archived(arch)
    files = sorted(root.rglob("*.parquet"))
    assert len(files) == 2
    checked = arch.verify_cold()
    assert checked.height == 2 and checked.get_column("problem").null_count() == 2
    assert set(checked.get_column("state")) == {"dropped"}
    replaced, cut = files
    table = pq.read_table(replaced)
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value",
                                    pc.multiply(table.column("value"), 2.0)), replaced)
    cut.write_bytes(cut.read_bytes()[:100])
    problems = dict(arch.verify_cold("metrics").select("path", "problem").iter_rows())
    assert set(problems) == {str(p.relative_to(root)) for p in files}
    assert all(name in (problems[str(p.relative_to(root))] or "")
               for p, name in ((replaced, replaced.name), (cut, cut.name)))
    assert arch.verify_cold("orders").is_empty()
    run = run_cli("archive", "verify", config=arch.config,
                  env_extra={"AGTS_ARCHIVE__ROOT": str(root)})
    assert run.returncode == 1, run.stderr
    assert "2 file(s) checked, 2 with a problem" in run.stdout
    assert replaced.name in run.stderr and cut.name in run.stderr
    assert "Traceback" not in run.stderr
    cut.unlink()
    run = run_cli("archive", "verify", "--json", config=arch.config,
                  env_extra={"AGTS_ARCHIVE__ROOT": str(root)})
    report = json.loads(run.stdout)
    assert run.returncode == 1 and report["files_checked"] == 2
    assert any("is missing" in p["problem"] and cut.name in p["problem"]
               for p in report["problems"])


def test_a_damaged_range_whose_hot_rows_are_gone_does_not_stop_the_other_ranges(
        arch: agts.StorageEngine) -> None:
    """Day 1 was exported (the run died before verify), then its chunk was dropped outside agts
    and its file cut short: nothing can archive it, but day 2 is archived all the same, and the
    run says which range failed and why, naming the file."""
    points = _points(days=2)
    arch.insert_metrics_batch(points)
    arch.export_cold("metrics", DAY0, DAY0 + DAY)
    root = Path(arch.config.archive.root)
    path = _first_file(arch, root)
    with arch.db.connection() as conn:
        conn.execute("UPDATE agts.archive_units SET state = 'exported'")
        conn.execute("SELECT drop_chunks('agts.metric_points', older_than => %s)", [DAY0 + DAY])
    path.write_bytes(path.read_bytes()[:64])
    report = arch.archive("metrics", DAY0, DAY0 + 2 * DAY, drop=True)
    assert (report.units_exported, report.units_dropped, report.rows_dropped) == (
        1, 1, points.height // 2)
    [(unit, why)] = report.failed
    assert unit.startswith("metrics [2026-01-01") and path.name in why and "damaged" in why
    assert arch.query_cold("metrics", DAY0 + DAY, DAY0 + 2 * DAY).height == points.height // 2
    run = run_cli("archive", "export", "metrics", "--start", "2026-01-01", "--end", "2026-01-03",
                  "--drop", config=arch.config, env_extra={"AGTS_ARCHIVE__ROOT": str(root)})
    assert run.returncode == 1 and path.name in run.stderr and "Traceback" not in run.stderr


def test_an_empty_export_does_not_break_the_readers_of_other_tables(
        arch: agts.StorageEngine) -> None:
    _, points = _archived(arch)
    report = arch.export_cold("fills")
    assert report.files_written == 0
    assert arch.iceberg_table("fills") is None  # nothing to commit, no table
    with arch.cold() as duck:
        assert duck.execute("SELECT count(*) FROM metrics").fetchone() == (points.height,)
    assert arch.scan_cold("metrics").select(pl.len()).collect().item() == points.height
    with pytest.raises(agts.ValidationError, match="'fills' has no archived files"):
        arch.scan_cold("fills")


def test_archive_with_drop_refreshes_the_rollups_first(arch: agts.StorageEngine) -> None:
    """Hourly counts of an archived day are still answered by the hot tier's rollups: the drop
    no longer takes points that no rollup has seen (the CLI's `archive export --drop` too)."""
    points = _points(days=1)
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)
    assert _hot_count(arch) == 0
    counts = arch.query_aggregated("latency", DAY0, DAY0 + DAY, "1h", "count")
    expected = (points.group_by(pl.col("timestamp").dt.truncate("1h")).len("count")
                .sort("timestamp"))
    assert counts.select("timestamp", pl.col("count").cast(pl.UInt32)).equals(expected)


def test_a_catalog_row_pointing_outside_the_root_is_refused(arch: agts.StorageEngine,
                                                            tmp_path: Path) -> None:
    """The table's metadata file must lie inside the root as well: a catalog row moved to a
    copy elsewhere (which could list any file) is refused before its snapshot is used."""
    _archived(arch)
    with arch.db.connection() as conn:
        [(location,)] = conn.execute("SELECT metadata_location FROM agts.iceberg_tables"
                                     ).fetchall()
        copy = tmp_path / "copy.metadata.json"
        copy.write_bytes(Path(location.removeprefix("file://")).read_bytes())
        conn.execute("UPDATE agts.iceberg_tables SET metadata_location = %s", [f"file://{copy}"])
    before = sorted(p for p in tmp_path.rglob("*") if "archive" not in p.parts)
    arch.insert_metrics_batch(_points(days=1).with_columns(pl.col("timestamp") + 3 * DAY))
    for call in (arch.cold, lambda: arch.scan_cold("metrics"),
                 lambda: arch.archive("metrics", DAY0 + 3 * DAY, DAY0 + 4 * DAY, drop=True)):
        with pytest.raises(agts.ArchiveError, match="not inside the archive root") as info:
            call()
        assert str(copy) in str(info.value)
    # the commit refused too: nothing was written beside the planted metadata file
    assert sorted(p for p in tmp_path.rglob("*") if "archive" not in p.parts) == before


def test_a_missing_iceberg_metadata_file_is_an_archive_error(arch: agts.StorageEngine) -> None:
    root, _ = _archived(arch)
    for manifest_list in (root / "table=metrics" / "metadata").glob("snap-*.avro"):
        manifest_list.unlink()
    arch.insert_metrics_batch(_points(days=1).with_columns(pl.col("timestamp") + 3 * DAY))
    for call in (arch.cold, lambda: arch.scan_cold("metrics"),
                 lambda: arch.archive("metrics", DAY0 + 3 * DAY, DAY0 + 4 * DAY, drop=True)):
        with pytest.raises(agts.ArchiveError, match="a file of the Iceberg table is missing"):
            call()
