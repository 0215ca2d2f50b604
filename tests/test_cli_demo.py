"""``agts demo`` as a user runs it: a subprocess on a real database, twice, then another day."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

import agts
from agts.db import conninfo
from tests.conftest import _drop_database
from tests.test_cli import run_cli

SMALL = ("--points", "20000", "--orders", "300")


@pytest.fixture
def demo_db(config: agts.StorageConfig, base_config: agts.StorageConfig) -> Iterator[str]:
    """The name of the database the demo makes for itself in this test (dropped after)."""
    name = f"{config.database.database}_demo"
    try:
        yield name
    finally:
        _drop_database(base_config, name)


def _demo(config: agts.StorageConfig, root: Path, *args: str, database: str) -> dict:
    result = run_cli("demo", *SMALL, "--archive-root", str(root), "--json", "--database",
                     database, *args, config=config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_demo_twice_is_idempotent_and_another_seed_adds_a_day(
    config: agts.StorageConfig, tmp_path: Path, demo_db: str,
) -> None:
    first = _demo(config, tmp_path, "--seed", "3", database=demo_db)
    assert first["database"].endswith(f"/{demo_db}")
    assert first["start"] == "2026-01-04T12:00:00+00:00"
    generated = first["generated"]
    assert abs(generated["metrics"] - 20_000) <= 200
    assert generated["orders"] == 300 == first["stored"]["orders"]
    assert first["new_rows"] == {table: generated[table] for table in first["new_rows"]}
    assert first["ingest_points_per_sec"] > 1_000
    # the older half went to Parquet and left the hot tier; hot + cold is every point once
    archive = first["archive"]
    assert archive["files"] >= 1 and archive["bytes"] > 0
    assert Path(archive["root"]) == tmp_path
    assert list(tmp_path.glob("table=metrics/date=2026-01-04/*.parquet"))
    assert archive["duckdb_points"] == archive["cold_rows"] == archive["rows"] > 0
    assert archive["hot_rows"] + archive["cold_rows"] == generated["metrics"]
    assert first["stored"]["metrics"] == archive["hot_rows"]
    assert first["reconcile_differences"] == 0
    assert [p["market"] for p in first["pnl"]] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    for p in first["pnl"]:
        assert p["net_pnl"] == pytest.approx(p["realized_pnl"] + p["unrealized_pnl"] - p["fees"])
        assert p["fees"] > 0 and p["fills"] > 0

    again = _demo(config, tmp_path, "--seed", "3", database=demo_db)
    assert set(again["new_rows"].values()) == {0}
    assert again["metrics_already_stored"] is True and again["ingest_points_per_sec"] is None
    assert again["stored"] == first["stored"]
    assert again["pnl"] == first["pnl"]
    assert again["archive"]["files_written_now"] == 0
    assert again["archive"]["rows"] == archive["rows"]

    other = _demo(config, tmp_path, "--seed", "4", database=demo_db)
    assert other["start"] == "2026-01-05T12:00:00+00:00"
    assert other["new_rows"]["orders"] == 300
    own = config.with_overrides(database={"database": demo_db})
    with psycopg.connect(conninfo(own.database)) as conn:
        orders = conn.execute("SELECT count(*) FROM agts.orders").fetchone()
    assert orders == (600,)
    with psycopg.connect(conninfo(config.database)) as conn:  # the configured database: untouched
        assert conn.execute("SELECT count(*) FROM agts.orders").fetchone() == (0,)


def test_demo_text_summary(config: agts.StorageConfig, tmp_path: Path, demo_db: str) -> None:
    result = run_cli("demo", *SMALL, "--seed", "5", "--archive-root", str(tmp_path),
                     "--database", demo_db, config=config)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for fragment in ("agts demo: seed 5, 2026-01-06 12:00", "metrics", "position_snapshots",
                     "points/s", "BTC-USD", "net", "reconciled against the fills: 0 difference",
                     "Parquet file(s)", "duckdb", "hot ∪ cold", "elapsed"):
        assert fragment in out, fragment
    assert "· generating the day" in result.stderr  # step lines go to stderr, not the summary
    quiet = run_cli("demo", *SMALL, "--seed", "5", "--quiet", "--archive-root", str(tmp_path),
                    "--database", demo_db, config=config)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "every metric batch was already stored" in quiet.stdout
    assert "archived by an earlier run" in quiet.stdout


def test_demo_in_a_database_of_its_own(config: agts.StorageConfig, tmp_path: Path,
                                       demo_db: str) -> None:
    result = _demo(config, tmp_path, "--points", "5000", "--orders", "50", database=demo_db)
    assert result["database"].endswith(f"/{demo_db}")
    assert result["stored"]["orders"] == 50
    with agts.connect(config.with_overrides(database={"database": demo_db})) as engine:
        assert agts.ExecutionStore(engine).query_orders(
            datetime.fromisoformat(result["start"]), datetime.fromisoformat(result["end"])).height == 50


def test_demo_refuses_a_database_it_did_not_make(config: agts.StorageConfig,
                                                 tmp_path: Path) -> None:
    """The demo archives and drops data: pointed at an existing database (here the test's own,
    with a point in the demo's day), it refuses and leaves it alone."""
    with agts.connect(config) as engine:
        engine.insert_metric(agts.MetricPoint(datetime.fromisoformat("2026-01-01T13:00:00+00:00"),
                                              "mine", 1.0))
    result = run_cli("demo", *SMALL, "--archive-root", str(tmp_path), "--database",
                     config.database.database, config=config)
    assert result.returncode == 2, result.stderr
    assert f"database {config.database.database!r} exists and was not made by this job" in (
        result.stderr)
    assert "Traceback" not in result.stderr
    with psycopg.connect(conninfo(config.database)) as conn:
        assert conn.execute("SELECT count(*) FROM agts.metric_points").fetchone() == (1,)
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--points", "0"], "must be a positive integer, got '0'", id="points"),
    pytest.param(["--seed", "-1"], "seed must be an integer 0..9999, got '-1'", id="seed"),
    pytest.param(["--orders", "many"], "must be a positive integer, got 'many'", id="orders"),
])
def test_demo_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli("demo", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_demo_help_names_defaults_and_examples() -> None:
    result = run_cli("demo", "--help")
    assert result.returncode == 0
    for fragment in ("default 1,000,000", "./agts-demo-archive", "--database", "Examples:",
                     "--json"):
        assert fragment in result.stdout, fragment
