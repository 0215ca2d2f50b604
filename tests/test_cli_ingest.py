"""``agts ingest`` as a user runs it: files of every format into every table, then read back."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

import agts
from agts.sample import SampleDay, trading_day
from tests.test_cli import run_cli

START = datetime(2026, 2, 2, tzinfo=UTC)
WINDOW = (START, START + timedelta(hours=6))


@pytest.fixture(scope="module")
def day() -> SampleDay:
    return trading_day(seed=11, points=6_000, orders=80, start=START, hours=6)


def _write_arrow(frame: pl.DataFrame, path: Path) -> Path:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, frame.to_arrow().schema) as w:
        w.write_table(frame.to_arrow())
    return path


def test_every_table_from_every_format(config: agts.StorageConfig, tmp_path: Path,
                                       day: SampleDay) -> None:
    files = {"metrics": "metrics.parquet", "quotes": "quotes.arrow", "orders": "orders.csv",
             "fills": "fills.csv", "order_events": "events.csv", "risk_decisions": "risk.parquet"}
    day.metrics.write_parquet(tmp_path / "metrics.parquet")
    _write_arrow(day.quotes, tmp_path / "quotes.arrow")
    day.orders.write_csv(tmp_path / "orders.csv")
    day.fills.write_csv(tmp_path / "fills.csv")
    day.order_events.write_csv(tmp_path / "events.csv")
    day.risk_decisions.write_parquet(tmp_path / "risk.parquet")
    expected = {"metrics": day.metrics.height, "quotes": day.quotes.height,
                "orders": day.orders.height, "fills": day.fills.height,
                "order_events": day.order_events.height,
                "risk_decisions": day.risk_decisions.height}
    for into, name in files.items():
        result = run_cli("ingest", str(tmp_path / name), "--into", into, "--batch-size", "2500",
                         "--json", config=config)
        assert result.returncode == 0, (into, result.stderr)
        report = json.loads(result.stdout)
        assert report["into"] == into
        assert report["total"]["rows_read"] == expected[into]
        assert report["total"]["rows_new"] == expected[into], into
        assert report["files"][0]["format"] == {"parquet": "parquet", "arrow": "arrow",
                                                "csv": "csv"}[Path(name).suffix[1:]]
    with agts.connect(config) as engine:
        store = agts.ExecutionStore(engine)
        orders = store.query_orders(START, START + timedelta(days=1))
        assert orders.height == day.orders.height
        assert orders.sort("client_order_id")["price"].equals(
            day.orders.sort("client_order_id")["price"], null_equal=True)
        fills = store.query_fills(START, START + timedelta(days=1))
        assert fills["timestamp"].to_list() == day.fills["timestamp"].to_list()  # CSV keeps µs
        assert fills["fee"].sum() == pytest.approx(day.fills["fee"].sum())
        points = engine.query_aggregated("latency_ms", *WINDOW, "6h", "count")
        assert points["count"].sum() == day.metrics.filter(
            pl.col("metric_name") == "latency_ms").height


def test_reingesting_a_file_adds_nothing_and_text_summary(
    config: agts.StorageConfig, tmp_path: Path, day: SampleDay,
) -> None:
    path = tmp_path / "metrics.parquet"
    day.metrics.write_parquet(path)
    first = run_cli("ingest", str(path), "--into", "metrics", config=config)
    assert first.returncode == 0, first.stderr
    assert f"{day.metrics.height:,} rows read, {day.metrics.height:,} new" in first.stdout
    assert "rows/s" in first.stdout
    again = run_cli("ingest", str(path), "--into", "metrics", config=config)
    assert again.returncode == 0
    assert f"0 new, {day.metrics.height:,} already stored" in again.stdout


def test_csv_metrics_with_json_labels_and_skip(config: agts.StorageConfig, tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text(
        "timestamp,metric_name,value,labels\n"
        '2026-02-02T10:00:00Z,queue_depth,5,"{""venue"": ""okx""}"\n'
        '2026-02-02 10:00:01,queue_depth,7,"{""venue"": ""okx""}"\n'
        '2026-02-02T12:00:02+02:00,queue_depth,,"{""venue"": ""okx""}"\n')
    strict = run_cli("ingest", str(path), "--into", "metrics", config=config)
    assert strict.returncode == 1
    assert "value" in strict.stderr and "row 2" in strict.stderr
    skip = run_cli("ingest", str(path), "--into", "metrics", "--on-error", "skip", "--json",
                   config=config)
    assert skip.returncode == 0, skip.stderr
    assert json.loads(skip.stdout)["total"] | {"seconds": 0, "rows_per_sec": 0} == {
        "rows_read": 3, "rows_new": 2, "duplicates": 0, "skipped": 1, "seconds": 0,
        "rows_per_sec": 0}
    with agts.connect(config) as engine:
        raw = engine.query_metrics("queue_depth", "2026-02-02", "2026-02-03", {"venue": "okx"})
    assert raw["timestamp"].to_list() == [datetime(2026, 2, 2, 10, tzinfo=UTC),
                                          datetime(2026, 2, 2, 10, 0, 1, tzinfo=UTC)]
    assert raw["value"].to_list() == [5.0, 7.0]


@pytest.mark.parametrize(("files", "extra", "code", "message"), [
    pytest.param(["missing.parquet"], [], 1, "no such file: 'missing.parquet'", id="missing"),
    pytest.param(["data.txt"], [], 2, "cannot tell the format of", id="extension"),
    pytest.param(["data.csv"], ["--batch-size", "0"], 2, "--batch-size must be positive",
                 id="batch-size"),
    pytest.param(["fills.csv"], [], 1, "is not a stored order", id="fill-without-order"),
])
def test_ingest_failures(config: agts.StorageConfig, tmp_path: Path, day: SampleDay,
                         files: list[str], extra: list[str], code: int, message: str) -> None:
    day.fills.write_csv(tmp_path / "fills.csv")
    (tmp_path / "data.csv").write_text("timestamp,metric_name,value\n")
    (tmp_path / "data.txt").write_text("")
    into = "fills" if files == ["fills.csv"] else "metrics"
    result = run_cli("ingest", *[str(tmp_path / f) if f != "missing.parquet" else f
                                 for f in files], "--into", into, *extra, config=config)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_ingest_needs_into() -> None:
    result = run_cli("ingest", "x.parquet")
    assert result.returncode == 2
    assert "the following arguments are required: --into" in result.stderr
