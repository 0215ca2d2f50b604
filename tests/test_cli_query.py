"""``agts query`` as a user runs it: raw points and aggregates to the terminal, CSV, Parquet, JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import agts
from agts.db import conninfo
from tests.test_cli import run_cli

START = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def loaded(config: agts.StorageConfig) -> agts.StorageConfig:
    """Two series of ``latency_ms``, one point per minute for 3 hours, value = minute index."""
    minutes = 180
    times = [START + timedelta(minutes=i) for i in range(minutes)]
    frame = pl.concat([
        pl.DataFrame({"timestamp": times, "metric_name": "latency_ms",
                      "value": [float(i) + offset for i in range(minutes)],
                      "labels": f'{{"venue": "{venue}"}}'})
        for venue, offset in (("binance", 0.0), ("okx", 1000.0))])
    with agts.connect(config) as engine:
        assert engine.insert_metrics_batch(frame).rows_written == 2 * minutes
    return config


def test_raw_points_as_a_table_with_label_filter(loaded: agts.StorageConfig) -> None:
    result = run_cli("query", "latency_ms", "--start", "2026-03-02T00:00Z",
                     "--end", "2026-03-02T00:05", "--labels", "venue=okx", config=loaded)
    assert result.returncode == 0, result.stderr
    assert "5 rows" in result.stdout
    assert '{"venue":"okx"}' in result.stdout and "binance" not in result.stdout
    assert "1004.0" in result.stdout


def test_aggregates_as_json(loaded: agts.StorageConfig) -> None:
    result = run_cli("query", "latency_ms", "--start", "2026-03-02", "--end", "2026-03-02T03:00",
                     "--bucket", "1h", "--agg", "avg,max,count", "--group-by", "venue", "--json",
                     config=loaded)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["timestamp"], r["venue"], r["avg"], r["max"], r["count"]) for r in rows[:3]] == [
        ("2026-03-02T00:00:00.000000+00:00", "binance", 29.5, 59.0, 60),
        ("2026-03-02T00:00:00.000000+00:00", "okx", 1029.5, 1059.0, 60),
        ("2026-03-02T01:00:00.000000+00:00", "binance", 89.5, 119.0, 60),
    ]
    assert len(rows) == 6


def test_any_of_several_label_values(loaded: agts.StorageConfig) -> None:
    result = run_cli("query", "latency_ms", "--start", "2026-03-02", "--end", "2026-03-02T03:00",
                     "--bucket", "3h", "--agg", "count", "--labels", "venue=okx",
                     "venue=binance", "--format", "csv", config=loaded)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["timestamp,count", "2026-03-02T00:00:00.000000+00:00,360"]


@pytest.mark.parametrize("suffix", ["parquet", "csv", "json"])
def test_raw_points_to_a_file_stream_past_max_results(loaded: agts.StorageConfig, tmp_path: Path,
                                                      suffix: str) -> None:
    small = {"AGTS_QUERY__MAX_RESULTS": "100"}
    out = tmp_path / f"points.{suffix}"
    args = ("query", "latency_ms", "--start", "2026-03-02", "--end", "2026-03-03")
    too_many = run_cli(*args, config=loaded, env_extra=small)
    assert too_many.returncode == 1
    assert "more than 100 rows" in too_many.stderr and "--output FILE" in too_many.stderr
    # the connection flag after the command, as users type it (a file: no password in argv)
    settings = tmp_path / "agts.yaml"
    settings.write_text(json.dumps({"database": {"dsn": conninfo(loaded.database)}}))
    result = run_cli(*args, "--output", str(out), "--config", str(settings), env_extra=small)
    assert result.returncode == 0, result.stderr
    assert "360 rows written to" in result.stderr
    if suffix == "parquet":
        frame = pl.read_parquet(out)
        assert frame.schema["labels"] == pl.Struct({"venue": pl.String})
    elif suffix == "csv":
        frame = pl.read_csv(out)
        assert frame["labels"][0] == '{"venue":"binance"}'
    else:
        frame = pl.read_json(out)
    assert frame.height == 360
    assert sorted(frame["value"].to_list())[:2] == [0.0, 1.0]


@pytest.mark.parametrize(("args", "code", "message"), [
    pytest.param(["--start", "yesterday"], 2, "expected an ISO 8601 date or time", id="start"),
    pytest.param(["--labels", "venue"], 2, "labels must look like key=value, got 'venue'",
                 id="labels"),
    pytest.param(["--format", "parquet"], 2, "--format parquet needs --output FILE",
                 id="parquet-stdout"),
    pytest.param(["--group-by", "venue"], 2, "--group-by needs --bucket", id="group-by"),
    pytest.param(["--start", "2026-03-02", "--end", "2026-03-03", "--bucket", "0s"], 2,
                 "bucket must be a positive duration", id="bucket"),
    pytest.param(["--start", "2026-03-02", "--end", "2026-03-03", "--bucket", "1h", "--agg",
                  "mode"], 2, "'mode'", id="aggregation"),
    pytest.param(["--start", "2026-03-03", "--end", "2026-03-02"], 2, "end", id="range"),
])
def test_query_errors(config: agts.StorageConfig, args: list[str], code: int,
                      message: str) -> None:
    result = run_cli("query", "latency_ms", *args, config=config)
    assert result.returncode == code, result.stderr
    assert message in result.stderr


def test_series_and_labels_list_what_exists(config: agts.StorageConfig) -> None:
    with agts.connect(config) as engine:
        engine.insert_metrics_batch([
            agts.MetricPoint(datetime(2026, 3, 2, h, tzinfo=UTC), "lat", float(h),
                             {"venue": v, "region": "eu"})
            for h in range(3) for v in ("okx", "kraken")])
    metrics = run_cli("series", config=config)
    assert metrics.returncode == 0, metrics.stderr
    assert metrics.stdout.splitlines()[0].split() == ["metric", "series", "first", "last",
                                                      "points", "(est.)"]
    assert "lat" in metrics.stdout and "2026-03-02T02:00:00.000000+00:00" in metrics.stdout
    one = json.loads(run_cli("series", "lat", "--labels", "venue=okx", "--json",
                             config=config).stdout)
    assert [(r["labels"], r["points_estimate"], r["last_timestamp"]) for r in one] == [
        ({"region": "eu", "venue": "okx"}, 3, "2026-03-02T02:00:00.000000+00:00")]
    keys = run_cli("labels", "--metric", "lat", config=config)
    assert keys.returncode == 0 and keys.stdout.split() == ["key", "series", "metrics",
                                                            "region", "2", "1", "venue", "2", "1"]
    values = json.loads(run_cli("labels", "venue", "--json", config=config).stdout)
    assert values == [{"value": "kraken", "series": 1}, {"value": "okx", "series": 1}]
    missing = run_cli("series", "latency", config=config)
    assert missing.returncode == 0 and "no metric 'latency' is stored" in missing.stderr
    bad = run_cli("labels", "--labels", "a=b", config=config)
    assert bad.returncode == 2 and "--labels needs a KEY" in bad.stderr
