"""The notebooks run top to bottom on a fresh database, produce their plots and sane figures."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

import agts
from agts.db import conninfo

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _execute(name: str, config: agts.StorageConfig, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the notebook in a python3 kernel (the venv's) whose environment names the database;
    return the code cells' outputs and the JSON summary its last cell prints."""
    for key in [k for k in os.environ if k.startswith("AGTS_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AGTS_DSN", conninfo(config.database))
    monkeypatch.setenv("AGTS_ARCHIVE__ROOT", str(tmp_path / "archive"))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=240,
                            resources={"metadata": {"path": str(tmp_path)}})
    before = _databases(config)
    client.execute()
    # It worked in a temporary database of its own: none is left, the configured one is untouched.
    assert _databases(config) == before
    with agts.connect(config) as engine, engine.db.connection() as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM agts.metric_points) + "
                            "(SELECT count(*) FROM agts.fills)").fetchone() == (0,)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    last = notebook.cells[-1].outputs
    text = "".join(o.get("text", "") for o in last if o.output_type == "stream")
    return outputs, json.loads(text.strip().splitlines()[-1])


def _databases(config: agts.StorageConfig) -> set[str]:
    with agts.connect(config) as engine, engine.db.connection() as conn:
        return {r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'agts\\_tmp\\_%'").fetchall()}


def _images(outputs: list[dict[str, Any]]) -> int:
    return sum(1 for o in outputs if "image/png" in o.get("data", {}))


@pytest.mark.parametrize("name", ["risk_backtesting.ipynb", "storage_tour.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "What it needs" in notebook.cells[0].source
    assert "temporary database of its own" in notebook.cells[0].source


def test_risk_backtesting(config: agts.StorageConfig, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, s = _execute("risk_backtesting.ipynb", config, tmp_path, monkeypatch)
    assert _images(outputs) == 3  # PnL curve + drawdown, exposure, PnL-change histogram
    assert s["fills"] > 4_000 and s["markets"] == 3
    # the first day was archived and dropped: the backtest read it back through tiers="all"
    assert 0 < s["archived_fills"] < s["fills"]
    assert s["hot_fills"] + s["archived_fills"] == s["fills"]
    assert s["snapshot_differences"] == 0
    assert s["max_drawdown"] < 0
    assert 0 < s["var_99"] <= s["es_99"] < 10_000
    assert 0 < s["what_if_denied"] < 1_500 and s["stored_denied"] > 0
    assert s["what_if_net_pnl"] != s["final_net_pnl"]


def test_storage_tour(config: agts.StorageConfig, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    outputs, s = _execute("storage_tour.ipynb", config, tmp_path, monkeypatch)
    assert _images(outputs) == 2  # hourly p99 latency, hot ∪ cold
    assert s["points_written"] == s["points_generated"] > 100_000
    assert s["archived_files"] == 1 and 0 < s["archived_rows"] < s["points_generated"]
    assert s["duckdb_points"] == s["archived_rows"] == s["restored"]
    assert s["hot_latency_points"] > 0 and s["cold_latency_points"] > 0
    assert s["hot_latency_points"] + s["cold_latency_points"] == s["latency_points"]
    assert s["all_tiers_points"] == s["latency_points"]
    # The configured cold tier (AGTS_ARCHIVE__ROOT, set by _execute) belongs to the user's own
    # database: the tour wrote its files elsewhere.
    assert not (tmp_path / "archive").exists()
