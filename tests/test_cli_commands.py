"""Every ``agts`` command as a user meets it: help with examples, the same flags, exit codes, and
the archive / storage / retention commands end to end in subprocesses on a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

import agts
from agts.cli import build_parser
from agts.cli._common import repeat
from agts.db import conninfo
from tests.test_cli import run_cli

LEAVES = [
    ["local"], ["migrate"], ["status"], ["demo"], ["roles"], ["archive", "export"],
    ["archive", "restore"], ["archive", "list"], ["retention", "run"], ["storage"], ["ingest"],
    ["query"], ["series"], ["labels"], ["rollups", "refresh"], ["rollups", "status"],
]
DAY = datetime(2025, 6, 1, tzinfo=UTC)


def test_the_list_covers_every_command() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(commands) == {leaf[0] for leaf in LEAVES}


@pytest.mark.parametrize("command", LEAVES, ids=" ".join)
def test_help_has_examples_and_the_common_flags(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "Examples:" in text
    for flag in ("--json", "--config FILE", "--dsn DSN"):
        assert flag in text, flag
    assert "Exit codes: 0 ok" in text and "2 usage error" in text and "141 stdout closed" in text


def _points(config: agts.StorageConfig) -> int:
    frame = pl.DataFrame({
        "timestamp": [DAY + timedelta(minutes=10 * i) for i in range(288)],  # two days
        "metric_name": "queue_depth", "value": [float(i) for i in range(288)],
        "labels": '{"venue": "binance"}'})
    with agts.connect(config) as engine:
        return engine.insert_metrics_batch(frame).rows_written


def test_archive_export_list_restore(config: agts.StorageConfig, tmp_path: Path) -> None:
    assert _points(config) == 288
    export = run_cli("archive", "export", "metrics", "--start", "2025-06-01", "--end",
                     "2025-06-02", "--drop", "--root", str(tmp_path), "--json", config=config)
    assert export.returncode == 0, export.stderr
    report = json.loads(export.stdout)
    assert (report["rows_exported"], report["units_dropped"], report["rows_dropped"]) == (144, 1, 144)
    files = list(tmp_path.glob("table=metrics/date=2025-06-01/*.parquet"))
    assert len(files) == 1 and pl.read_parquet(files[0]).height == 144

    listing = run_cli("archive", "list", "--table", "metrics", "--json", config=config)
    assert listing.returncode == 0, listing.stderr
    [entry] = json.loads(listing.stdout)
    assert (entry["state"], entry["rows"], entry["root"]) == ("dropped", 144, str(tmp_path))
    text = run_cli("archive", "list", config=config)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"archive root: {tmp_path}"
    assert lines[1].split() == ["state", "rows", "size", "from", "to", "path"]
    assert lines[2].split()[:2] == ["dropped", "144"] and " kB " in lines[2]
    assert "2025-06-01T00:00:00.000000+00:00  2025-06-01T23:50:00.000000+00:00" in lines[2]
    assert lines[-1] == "1 file(s)"

    env = {"AGTS_ARCHIVE__ROOT": str(tmp_path)}
    restore = run_cli("archive", "restore", "metrics", "2025-06-01", "2025-06-02", config=config,
                      env_extra=env)
    assert restore.returncode == 0, restore.stderr
    assert restore.stdout.strip() == "metrics: restored 144 rows"
    with agts.connect(config) as engine:
        assert engine.query_aggregated("queue_depth", DAY, DAY + timedelta(days=2), "1d",
                                       "count")["count"].to_list() == [144, 144]


def test_archive_export_text_and_failures(config: agts.StorageConfig, tmp_path: Path) -> None:
    _points(config)
    ok = run_cli("archive", "export", "metrics", "--end", "2025-06-02", "--root", str(tmp_path),
                 config=config)
    assert ok.returncode == 0, ok.stderr
    assert "metrics: exported 1 chunk range(s), 144 rows in 1 file(s)" in ok.stdout
    # no root and an unknown table are mistakes of the command line: usage errors
    no_root = run_cli("archive", "export", "metrics", config=config)
    assert no_root.returncode == 2 and "archive" in no_root.stderr and "root" in no_root.stderr
    unknown = run_cli("archive", "export", "nonsense", "--root", str(tmp_path), config=config)
    assert unknown.returncode == 2 and "'nonsense'" in unknown.stderr


def test_storage_and_retention_text(config: agts.StorageConfig, tmp_path: Path) -> None:
    _points(config)
    storage = run_cli("storage", config=config)
    assert storage.returncode == 0, storage.stderr
    assert "metric_points" in storage.stdout or "metrics" in storage.stdout
    # one header line, whole column names, sizes for people (not a Polars printout)
    header, *rows = storage.stdout.splitlines()
    assert header.split() == ["table", "hot", "warm", "cold", "total", "compression", "cold",
                              "rows", "growth/day", "retention", "in", "30", "days", "steady",
                              "state"]
    metrics = next(r for r in rows if r.startswith("metrics "))
    assert " kB " in metrics and "90 d" in metrics
    assert "┆" not in storage.stdout and "---" not in storage.stdout
    by_chunk = run_cli("storage", "--by", "chunk", config=config)
    assert by_chunk.returncode == 0, by_chunk.stderr
    header, *rows = by_chunk.stdout.splitlines()
    assert header.split() == ["table", "tier", "chunk", "from", "to", "rows", "size"]
    assert any(r.startswith("metrics  hot ") and "2025-06-01T00:00:00.000000+00:00" in r
               for r in rows)
    assert rows[-1].endswith("chunk(s) and archive unit(s)")
    chunks = run_cli("storage", "--by", "chunk", "--json", config=config)
    assert chunks.returncode == 0, chunks.stderr
    assert isinstance(json.loads(chunks.stdout), list)
    dry = run_cli("retention", "run", "--dry-run", config=config,
                  env_extra={"AGTS_ARCHIVE__ROOT": str(tmp_path)})
    assert dry.returncode == 0, dry.stderr
    assert "(dry run)" in dry.stdout
    assert not list(tmp_path.rglob("*.parquet"))  # a dry run writes nothing
    bad = run_cli("retention", "run", "--every", "soon", config=config)
    assert bad.returncode == 2 and "interval must be a positive number" in bad.stderr


def test_rollups_refresh_and_status(config: agts.StorageConfig) -> None:
    _points(config)
    before = run_cli("rollups", "status", "--json", config=config)
    assert before.returncode == 0, before.stderr
    state = {r["rollup"]: r for r in json.loads(before.stdout)}
    assert set(state) == {"rollup_1m", "rollup_1h"}
    assert state["rollup_1h"]["watermark"] is None and state["rollup_1h"]["pending_batches"] == 1
    assert state["rollup_1m"]["width"] == 60.0
    once = run_cli("rollups", "refresh", config=config)
    assert once.returncode == 0, once.stderr
    assert once.stdout.startswith("refreshed: rollup_1h 1 range(s), rollup_1m 1 range(s) in ")
    after = {r["rollup"]: r for r in json.loads(run_cli("rollups", "status", "--json",
                                                        config=config).stdout)}
    assert after["rollup_1h"]["pending_batches"] == 0 and after["rollup_1h"]["watermark"]
    assert 0 <= after["rollup_1h"]["lag"] <= 3600
    text = run_cli("rollups", "status", config=config)
    kind = after["rollup_1m"]["kind"]  # "table" (Apache) or "continuous aggregate" (Community)
    assert f"rollup_1m  ({kind}): materialized before 20" in text.stdout
    assert "0 ingest batch(es) pending" in text.stdout
    # --every: refreshes until SIGTERM, then exits 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGTS_")}
    env["AGTS_DSN"] = conninfo(config.database)
    service = subprocess.Popen([sys.executable, "-m", "agts.cli", "rollups", "refresh", "--every",
                                "1s", "--json"], stdout=subprocess.PIPE, text=True, env=env)
    assert service.stdout is not None
    rounds = [json.loads(service.stdout.readline()) for _ in range(2)]  # JSON Lines
    service.send_signal(signal.SIGTERM)
    service.communicate(timeout=30)
    assert service.returncode == 0
    for r in rounds:  # nothing new since the first refresh (a new minute or hour: one range)
        assert set(r["ranges_materialized"]) == {"rollup_1h", "rollup_1m"}
        assert set(r["ranges_materialized"].values()) <= {0, 1} and r["seconds"] >= 0
    bad = run_cli("rollups", "refresh", "--every", "0m", config=config)
    assert bad.returncode == 2 and "interval must be a positive number" in bad.stderr


@pytest.mark.parametrize("command", [["status"], ["migrate", "status"],
                                     ["query", "x"]], ids=" ".join)
def test_connection_flags_work_before_and_after_the_command(
    config: agts.StorageConfig, tmp_path: Path, command: list[str],
) -> None:
    settings = tmp_path / "agts.yaml"
    settings.write_text(json.dumps({"database": {"dsn": conninfo(config.database)}}))
    before = run_cli("--config", str(settings), *command, "--json")
    after = run_cli(*command, "--json", "--config", str(settings))
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) is not None and json.loads(after.stdout) is not None
    # a flag after the command wins over one before it
    broken = tmp_path / "broken.yaml"
    broken.write_text(json.dumps({"database": {"port": 1, "connection_timeout_sec": 1}}))
    both = run_cli("--config", str(broken), *command, "--json", "--config", str(settings))
    assert both.returncode == 0, both.stderr
    unreachable = run_cli("--config", str(settings), *command, "--config", str(broken))
    assert unreachable.returncode == 3
    assert "127.0.0.1:1" in unreachable.stderr


def test_a_repeating_service_outlives_transient_errors(caplog: pytest.LogCaptureFixture) -> None:
    outcomes: list[BaseException | None] = [
        agts.ConnectError("server at 127.0.0.1:1 is restarting", transient=True), None,
        agts.StorageError("permission denied for table metric_points")]
    calls = []

    def step() -> None:
        calls.append(1)
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(agts.StorageError, match="permission denied"):
        repeat(0.01, step, what="rollup refresh")
    assert len(calls) == 3  # the transient error was logged and the next round ran
    assert "rollup refresh failed, trying again in 0.01s: server at 127.0.0.1:1" in caplog.text
    assert signal.getsignal(signal.SIGTERM) == before  # handlers put back
    once = [agts.ConnectError("down", transient=True)]
    with pytest.raises(agts.ConnectError):  # run once (no --every): no retry
        repeat(None, lambda: (_ for _ in ()).throw(once[0]), what="retention run")
