"""No password in logs (DEBUG), exceptions, ``repr``, CLI output or the spool files."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.db import conninfo
from tests.reliability._data import seq_points
from tests.reliability.conftest import allow_connections, free_port


@pytest.fixture
def secret_login(engine: agts.StorageEngine, config: StorageConfig) -> Iterator[tuple[StorageConfig, str]]:
    """A login role with a distinctive password, and settings that use it."""
    role = f"sec_{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_hex(8)}-do-not-leak"
    with engine.db.connection() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
    try:
        yield config.with_overrides(database={"user": role, "password": password,
                                              "connection_timeout_sec": 1}), password
    finally:
        with engine.db.connection() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                         (role,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _everything(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.__cause__)


def test_no_password_in_logs_errors_or_reprs(secret_login: tuple[StorageConfig, str],
                                             caplog: pytest.LogCaptureFixture,
                                             tmp_path: Path) -> None:
    cfg, password = secret_login
    caplog.set_level(logging.DEBUG)
    seen: list[str] = [repr(cfg), str(cfg), repr(cfg.database), cfg.database.describe()]
    dsn_cfg = StorageConfig.from_dsn(conninfo(cfg.database))
    seen += [repr(dsn_cfg), repr(dsn_cfg.database)]
    with agts.connect(cfg, migrate=True) as engine:
        seen.append(repr(engine))
        engine.insert_metrics_batch(seq_points(0, 100))
        engine.query_metrics("seq", "2026-03-02", "2026-03-03")
        ing = engine.ingestor(batch_size=50, flush_interval_ms=10, spool_dir=tmp_path / "spool")
        seen.append(repr(ing))
        allow_connections(cfg, False)  # an outage: connection errors are logged and spooled
        try:
            ing.put(seq_points(100, 300))
            ing.flush(timeout=60)
            seen.append(str(ing.stats()))
        finally:
            allow_connections(cfg, True)
        ing.close(timeout=60)
        seen.append(str(ing.stats()))
    spool_bytes = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
    assert password.encode() not in spool_bytes

    failures = [
        lambda: agts.connect(cfg.with_overrides(database={"password": password + "x"})),
        lambda: agts.connect(cfg.with_overrides(database={"port": free_port()})),
        lambda: agts.connect(StorageConfig.from_dsn(
            f"postgresql://someone:{password}@127.0.0.1:{free_port()}/db?connect_timeout=1")),
        lambda: agts.connect(StorageConfig.from_dsn(f"host=127.0.0.1 port={free_port()} "
                                                    f"password={password} connect_timeout=1")),
        lambda: conninfo(StorageConfig.load(
            env={}, overrides={"database": {"dsn": f"password={password} ==="}}).database),
        lambda: agts.connect(cfg.with_overrides(database={"sslmode": "require"})),
    ]
    for fail in failures:
        with pytest.raises(agts.StorageError) as info:
            fail()
        seen.append(_everything(info.value))
    seen.append(caplog.text)
    for text in seen:
        assert password not in text
    assert "spooled batch" in caplog.text  # the logs did cover the outage


def test_no_password_in_cli_output(secret_login: tuple[StorageConfig, str]) -> None:
    cfg, password = secret_login
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGTS_")}
    runs = []
    for args, dsn in (
        (["-vv", "status"], conninfo(cfg.database)),
        (["-vv", "migrate", "status"], conninfo(cfg.database)),
        (["-vv", "status"], conninfo(cfg.with_overrides(database={"port": free_port()}).database)),
        (["-vv", "status"], conninfo(cfg.with_overrides(database={"password": "x" + password}
                                               ).database)),
    ):
        runs.append(subprocess.run([sys.executable, "-m", "agts.cli", *args], capture_output=True,
                                   text=True, env={**env, "AGTS_DSN": dsn}, timeout=120))
    runs.append(subprocess.run(  # a password on the command line is not echoed back either
        [sys.executable, "-m", "agts.cli", "--dsn",
         f"postgresql://u:{password}@127.0.0.1:{free_port()}/d?connect_timeout=1", "status"],
        capture_output=True, text=True, env=env, timeout=120))
    assert [r.returncode for r in runs] == [0, 0, 3, 3, 3]
    for r in runs:
        assert password not in r.stdout + r.stderr
    assert "cannot connect" in runs[2].stderr
