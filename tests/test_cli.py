"""The agts command, driven as a user would: a subprocess, a real database, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import agts
from agts.db import conninfo


def run_cli(*args: str, config: agts.StorageConfig | None = None,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGTS_")}
    if config is not None:
        env["AGTS_DSN"] = conninfo(config.database)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "agts.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_help_lists_commands_and_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("local", "migrate", "status"):
        assert command in result.stdout
    assert "Exit codes" in result.stdout


def test_usage_error_exits_2() -> None:
    result = run_cli("migrate", "sideways")
    assert result.returncode == 2
    assert "invalid choice: 'sideways'" in result.stderr


def test_status_json(config: agts.StorageConfig) -> None:
    result = run_cli("status", "--json", config=config)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema_version"] == report["latest_version"] >= 1
    assert report["edition"] in {"apache", "community"}
    assert report["timescaledb_version"]
    assert any(t["name"] == "schema_migrations" for t in report["tables"])


def test_migrate_down_up_status(config: agts.StorageConfig) -> None:
    down = run_cli("migrate", "down", "--to", "0", config=config)
    assert down.returncode == 0, down.stderr
    assert "down 0001_foundation" in down.stdout
    status = run_cli("migrate", "status", config=config)
    assert "0001_foundation" in status.stdout and "pending" in status.stdout
    up = run_cli("migrate", "up", config=config)
    assert up.returncode == 0 and "  up 0001_foundation" in up.stdout
    again = run_cli("migrate", "up", config=config)
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize("command", [["status"], ["migrate", "status"]])
def test_unreachable_database_exits_3_without_password(command: list[str]) -> None:
    cfg = agts.StorageConfig.load(env={}, overrides={"database": {
        "port": 1, "password": "cli-secret-pw", "connection_timeout_sec": 1}})
    result = run_cli(*command, config=cfg)
    assert result.returncode == 3
    assert "127.0.0.1:1" in result.stderr
    assert "cli-secret-pw" not in result.stderr + result.stdout


def test_local_status_json() -> None:
    result = run_cli("local", "status", "--json")
    state = json.loads(result.stdout)
    assert set(state) >= {"directory", "running", "port", "timescaledb_installed"}
    assert result.returncode == (0 if state["running"] else 1)


def test_status_text_shows_edition_and_schema(config: agts.StorageConfig) -> None:
    result = run_cli("status", config=config)
    assert result.returncode == 0, result.stderr
    assert "edition)" in result.stdout
    assert "(up to date)" in result.stdout
    assert "schema_migrations" in result.stdout
