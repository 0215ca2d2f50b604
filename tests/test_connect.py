from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import agts
from agts.db import _local, conninfo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_reports_versions_and_edition(engine: agts.StorageEngine) -> None:
    info = engine.server
    assert info.postgres_version_num >= 150000
    assert info.timescaledb_installed is True
    assert info.timescaledb_version and info.timescaledb_version[0].isdigit()
    assert info.edition in {"apache", "community"}
    with engine.db.connection() as conn:
        license_ = conn.execute("SHOW timescaledb.license").fetchone()[0]
    assert info.edition == ("apache" if license_ == "apache" else "community")


def test_engine_pools_connections(engine: agts.StorageEngine) -> None:
    with engine.db.connection() as conn:
        first = conn.info.backend_pid
    with engine.db.connection() as conn:
        assert conn.info.backend_pid == first
    with engine.db.adbc() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        adbc_pid = cur.fetchone()[0]
    with engine.db.adbc() as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        assert cur.fetchone()[0] == adbc_pid


def test_unreachable_server_fails_fast_naming_host_and_port() -> None:
    port = _free_port()
    cfg = agts.StorageConfig.load(env={}, overrides={"database": {
        "port": port, "password": "do-not-show-me", "connection_timeout_sec": 2}})
    started = time.monotonic()
    with pytest.raises(agts.ConnectError) as info:
        agts.connect(cfg)
    assert time.monotonic() - started < 3
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message
    assert "do-not-show-me" not in message and "do-not-show-me" not in repr(info.value)
    assert info.value.transient is True


def test_wrong_password_is_a_terminal_connect_error(config: agts.StorageConfig) -> None:
    bad = config.with_overrides(database={"password": "wrong-secret-123"})
    with pytest.raises(agts.ConnectError, match="password authentication failed") as info:
        agts.connect(bad)
    assert "wrong-secret-123" not in str(info.value)
    assert info.value.transient is False


def test_dsn_string_and_yaml_path(config: agts.StorageConfig, tmp_path: Path) -> None:
    with agts.connect(conninfo(config.database)) as engine:
        assert engine.server.database == config.database.database
    path = tmp_path / "agts.yaml"
    path.write_text(f"database:\n  database: {config.database.database}\n  port: {config.database.port}\n")
    if config.database.dsn:
        pytest.skip("the test server is given by DSN")
    with agts.connect(str(path)) as engine:
        assert engine.server.database == config.database.database
    with pytest.raises(agts.ValidationError, match="connect\\(\\) takes a DSN string"):
        agts.connect(42)  # type: ignore[arg-type]


@pytest.fixture
def throwaway_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A private cluster of this test's own (start, stop and restart it freely)."""
    if os.geteuid() == 0:
        base = Path("/var/tmp") / f"agts-test-cluster-{os.getpid()}"
    else:
        base = Path.home() / ".cache" / f"agts-test-cluster-{os.getpid()}"
    port = _free_port()
    monkeypatch.setenv("AGTS_LOCAL_DIR", str(base))
    monkeypatch.setenv("AGTS_LOCAL_PORT", str(port))
    try:
        yield port
    finally:
        try:
            _local.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_local_cluster_lifecycle_and_fail_fast_when_stopped(throwaway_cluster: int) -> None:
    port = throwaway_cluster
    assert _local.status().initialized is False
    state = _local.start(install=False)
    assert state.running and state.port == port
    started = time.monotonic()
    assert _local.start(install=False).running  # idempotent, quick
    assert time.monotonic() - started < 5

    cfg = agts.StorageConfig.load(env={}, overrides={"database": {"port": port}})
    with agts.connect(cfg, migrate=True) as engine:
        assert engine.server.timescaledb_installed
        with engine.db.connection() as conn:
            assert conn.execute("SHOW port").fetchone()[0] == str(port)
            assert conn.execute("SHOW timescaledb.telemetry_level").fetchone()[0] == "off"
            assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"

    assert _local.stop().running is False
    password = _local.local_password()
    assert password
    started = time.monotonic()
    with pytest.raises(agts.ConnectError) as info:
        agts.connect(cfg)
    assert time.monotonic() - started < cfg.database.connection_timeout_sec + 1
    assert f"127.0.0.1:{port}" in str(info.value)
    assert password not in str(info.value)

    assert _local.start(install=False).running
    with agts.connect(cfg) as engine:
        assert engine.server.timescaledb_installed


def test_a_block_that_switches_to_autocommit_hands_back_a_transactional_connection(
        engine: agts.StorageEngine) -> None:
    """A caller that turns autocommit on inside a block (for a VACUUM, say) must not leave it on
    for the next block: agts' own steps (an archive drop's LOCK TABLE) need a transaction."""
    with engine.db.connection() as conn:
        conn.autocommit = True
        conn.execute("SELECT 1")
    for _ in range(engine.config.database.max_connections + 1):
        with engine.db.connection() as conn:
            assert conn.autocommit is False
            conn.execute("LOCK TABLE agts.series IN ACCESS SHARE MODE")
