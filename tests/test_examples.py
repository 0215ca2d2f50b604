"""Every script in examples/ runs against a fresh database, as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import agts
from agts.db import conninfo

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Each example and lines its output must contain.
EXPECTED = {
    "insert_metrics.py": ["dataclasses: 999 written", "frame: 20000 written",
                          "retry: 0 written, already ingested: True", "refused: column 'value'",
                          "skip mode stored 1 point and returned 1 row"],
    "query_data.py": ["labels are a struct", "p99", "one-minute BTC-USD bars from the rollup",
                      "queue_depth in 5 pages", "too large without paging", "refresh_rollups"],
    "execution_history.py": ["stored: True | again: False", ": filled, filled 0.5 at 59996.00",
                             "refused: constraint 'order_lifecycle' violated",
                             "final net PnL 177.92 USD", "snapshots vs fills: 0 difference(s)",
                             "1 filled BTC-USD order(s); risk decisions: 1"],
    "archive_cold_tier.py": ["archived 2880 rows in 2 files", "dropped 2880 from the hot tier",
                             "hot rows: 1440, cold rows: 2880",
                             "points per day from the rollups: [1440, 1440, 1440]",
                             "restored 1440 rows",
                             "retention dry run"],
    "pipeline_backpressure.py": ["accepted 60000, written 60000", "backpressure: ingest buffer is full",
                                 "┆ async ┆ 20000 │"],
}


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


def _databases(config: agts.StorageConfig) -> set[str]:
    with agts.connect(config) as engine, engine.db.connection() as conn:
        return {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'agts\\_tmp\\_%'").fetchall()}


def _hot_rows(config: agts.StorageConfig) -> int:
    with agts.connect(config) as engine, engine.db.connection() as conn:
        row = conn.execute("SELECT (SELECT count(*) FROM agts.metric_points) "
                           "+ (SELECT count(*) FROM agts.orders)").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_twice_in_a_database_of_its_own(
        name: str, config: agts.StorageConfig, tmp_path: Path) -> None:
    """Each example makes a temporary database, says so first, and leaves nothing behind: the
    configured database is untouched and no database of its own is left; a second run gives the
    same output."""
    assert "temporary database of its own" in (EXAMPLES / name).read_text().split('"""')[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGTS_")}
    env["AGTS_DSN"] = conninfo(config.database)
    env["HOME"] = str(tmp_path)  # the pipeline's default spool lives under the home directory
    args = [str(tmp_path / "archive")] if name == "archive_cold_tier.py" else []
    before = _databases(config)
    for run in (1, 2):
        result = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                                text=True, env=env, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, f"run {run}: {result.stderr[-3000:]}"
        for fragment in EXPECTED[name]:
            assert fragment in result.stdout, (run, fragment)
        assert _databases(config) == before, run
    assert _hot_rows(config) == 0
    if name == "archive_cold_tier.py":
        assert list((tmp_path / "archive").glob("table=metrics/date=*/*.parquet"))
