"""Least privilege through the agts API: a reader runs every query, a writer ingests metrics and
stores orders and fills, and the reader can neither write nor drop. TLS options reach both drivers.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import adbc_driver_postgresql.dbapi as adbc_dbapi
import polars as pl
import psycopg
import pytest

import agts
from agts.db import conninfo
from tests.reliability._data import T0, seq_points
from tests.reliability.conftest import Cluster, idle_in_transaction
from tests.test_roles import logins  # noqa: F401 - the fixture: reader and writer login roles

T1 = T0 + dt.timedelta(hours=1)
ORDER = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def test_writer_ingests_and_stores_execution_history_reader_queries_everything(
    engine: agts.StorageEngine, logins: dict, tmp_path: Path  # noqa: F811
) -> None:
    with agts.connect(logins["writer"]) as writer:
        assert writer.insert_metrics_batch(seq_points(0, 500)).rows_written == 500
        with writer.ingestor(batch_size=100, spool_dir=tmp_path / "spool") as ing:
            ing.put(seq_points(500, 800))
        assert ing.stats().points_written == 300 and ing.stats().spool_pending == 0
        store = agts.ExecutionStore(writer)
        assert store.store_order(agts.Order(ORDER, T0, "v", "BTC-USDT", "buy", "limit", 10.0, 2.0,
                                            "new", "priv-1")) is True
        assert store.store_fill(agts.Fill(uuid.uuid4(), T0, ORDER, "v", "BTC-USDT", "buy", 10.0,
                                          1.0, 0.01, "USDT")) is True
        store.update_order_status(ORDER, "partially_filled", T0 + dt.timedelta(seconds=1))

    with agts.connect(logins["reader"]) as reader:
        raw = reader.query_metrics("seq", T0, T1, {"producer": "p0"})
        assert raw.height == 800 and raw.get_column("value").sum() == sum(range(800))
        agg = reader.query_aggregated("seq", T0, T1, "1m", ["count", "avg"])
        assert agg.get_column("count").sum() == 800
        assert reader.query_metrics_multi(["seq"], T0, T1, shape="wide").height == 800
        store = agts.ExecutionStore(reader)
        orders = store.query_orders(T0, T1)
        assert orders.get_column("status").to_list() == ["partially_filled"]
        assert store.query_fills(T0, T1).height == 1
        assert store.query_positions("BTC-USDT", T0, T1).height == 0
        assert store.query_risk_decisions(T0, T1).height == 0
        assert store.order_state(ORDER).filled_size == 1.0
        assert len(store.order_history(ORDER).events) == 2

        # ... and nothing else.
        with pytest.raises(agts.StorageError, match="permission denied") as info:
            reader.insert_metrics_batch(seq_points(800, 900))
        assert info.value.transient is False
        with pytest.raises(agts.StorageError, match="store orders failed: (UNAUTHORIZED|.*permission)"):
            store.store_order(agts.Order(uuid.uuid4(), T0, "v", "m", "buy", "market", None, 1.0,
                                         "new", "priv-2"))
        for statement in ("DROP TABLE agts.metric_points", "TRUNCATE agts.orders",
                          "DELETE FROM agts.fills", "ALTER TABLE agts.series ADD COLUMN x int"):
            with pytest.raises(agts.QueryError, match="permission denied|must be owner") as denied, \
                    reader.db.connection() as conn:
                conn.execute(statement)
            assert isinstance(denied.value.__cause__, psycopg.errors.InsufficientPrivilege)
    with engine.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM agts.metric_points").fetchone() == (800,)
        assert conn.execute("SELECT count(*) FROM agts.orders").fetchone() == (1,)
    assert idle_in_transaction(engine.config) == []


#: The advisory lock keys agts used before migration 0008 (archive of metric points, rollup
#: refreshes, fill writes): any role could take them.
_OLD_KEYS = ["hashtext('agts.archive:agts.metric_points')",
             str(int.from_bytes(b"agtsrllp", "big") & 0x7FFFFFFFFFFFFFFF), str(0x6167747300000003)]


def test_a_reader_cannot_block_archive_retention_refresh_or_writes(
    engine: agts.StorageEngine, config: agts.StorageConfig, logins: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A login with only the reader role holds every lock it can take, for as long as it likes:
    archive (with drop), retention, rollup refreshes and the writer's fills all go on."""
    day = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)  # a whole chunk, past the default retention
    engine.insert_metrics_batch(seq_points(0, 2000, step_us=60_000_000, start=day))
    with agts.connect(logins["writer"]) as writer:
        agts.ExecutionStore(writer).store_order(agts.Order(ORDER, T0, "v", "BTC-USDT", "buy",
                                                           "limit", 10.0, 2.0, "new", "priv-1"))
    with psycopg.connect(conninfo(logins["reader"].database), autocommit=True) as reader:
        for key in _OLD_KEYS:
            reader.execute(f"SELECT pg_advisory_lock({key})")
        for statement in ("SELECT * FROM agts.locks FOR UPDATE",
                          "SELECT * FROM agts.locks FOR KEY SHARE",
                          "LOCK TABLE agts.locks IN EXCLUSIVE MODE",
                          "INSERT INTO agts.locks VALUES ('archive:agts.metric_points')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
                reader.execute(statement)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM agts.locks")  # a reader's open transaction

        report = engine.archive("metrics", day, day + dt.timedelta(days=1), drop=True,
                                root=str(tmp_path / "cold"))
        assert (report.units_dropped, report.rows_exported, report.skipped) == (1, 1440, [])
        done: list[Any] = []
        refresh = threading.Thread(target=lambda: done.append(engine.refresh_rollups()),
                                   daemon=True)
        refresh.start()
        refresh.join(30)
        assert done, "refresh_rollups waited for the reader's lock"
        with agts.connect(logins["writer"]) as writer:
            assert agts.ExecutionStore(writer).store_fill(agts.Fill(
                uuid.uuid4(), T0, ORDER, "v", "BTC-USDT", "buy", 10.0, 1.0, 0.01, "USDT"))
        retention = config.with_overrides(archive={"root": str(tmp_path / "cold")})
        with agts.connect(retention) as owner:
            ran = owner.run_retention()
        assert ran.chunks_dropped >= 1 and not [s for s in ran.skipped if "holds" in s[1]]


def test_a_readers_open_transaction_holds_no_drop_and_no_writer_up(
    engine: agts.StorageEngine, config: agts.StorageConfig, logins: dict,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A reader's open transaction keeps the chunk it read locked against drops. The drop waits a
    few seconds, then leaves the range verified for the next run, so a writer of that chunk waits
    at most that long (it waited as long as the reader's session lived); migrations of an
    up-to-date database take no lock, so the migration lock a reader holds stalls nobody."""
    from agts._migrations import LOCK_KEY
    from agts.archive._archiver import DROP_LOCK_TIMEOUT_SEC

    day = dt.datetime(2025, 1, 6, tzinfo=dt.UTC)
    cold = str(tmp_path / "cold")
    engine.insert_metrics_batch(seq_points(0, 1440, step_us=60_000_000, start=day))
    with psycopg.connect(conninfo(logins["reader"].database)) as reader:
        reader.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        reader.execute("SELECT count(*) FROM agts.metrics WHERE timestamp >= %s", [day])
        reports: list[agts.ArchiveReport] = []
        run = threading.Thread(target=lambda: reports.append(engine.archive(
            "metrics", day, day + dt.timedelta(days=1), drop=True, root=cold)), daemon=True)
        began = time.monotonic()
        run.start()
        time.sleep(1.0)  # export and verify take well under a second: the drop is waiting now
        with agts.connect(config) as writer:
            written = writer.insert_metrics_batch(seq_points(5000, 5010,
                                                             start=day + dt.timedelta(hours=3)))
        waited = time.monotonic() - began
        run.join(DROP_LOCK_TIMEOUT_SEC + 30)
        assert written.rows_written == 10 and waited < DROP_LOCK_TIMEOUT_SEC + 5
        assert reports and (reports[0].units_verified, reports[0].units_dropped) == (1, 0)
        assert any("another session held its chunk" in why for _, why in reports[0].skipped)
        started = time.monotonic()
        with agts.connect(config, migrate=True) as again:  # up to date: no lock needed
            assert again.migrate() == []
        assert time.monotonic() - started < 10
        reader.rollback()
    report = engine.archive("metrics", day, day + dt.timedelta(days=1), drop=True, root=cold)
    # The late write sent the range back to export; exported, verified and dropped in one run.
    assert (report.units_dropped, report.rows_dropped) == (1, 1450)


def test_writer_cannot_drop_or_truncate_through_any_path(logins: dict) -> None:  # noqa: F811
    with agts.connect(logins["writer"]) as writer:
        for statement in ("DROP TABLE agts.metric_points", "TRUNCATE agts.metric_points",
                          "SELECT drop_chunks('agts.metric_points', now())"):
            with pytest.raises(agts.StorageError) as refused, writer.db.connection() as conn:
                conn.execute(statement)
            assert isinstance(refused.value.__cause__, psycopg.Error)


# -- TLS -------------------------------------------------------------------------------------------


def test_sslmode_require_against_a_server_without_tls_is_a_clear_connect_error(
    config: agts.StorageConfig,
) -> None:
    cfg = config.with_overrides(database={"sslmode": "require"})
    text = conninfo(cfg.database)
    assert "sslmode=require" in text
    with pytest.raises(agts.ConnectError, match="server does not support SSL") as info:
        agts.connect(cfg)
    where = psycopg.conninfo.conninfo_to_dict(text)  # the DSN's server (AGTS_TEST_DSN) or the fields'
    assert f"{where['host']}:{where['port']}" in str(info.value)
    # The same conninfo is what the ADBC pool opens: libpq refuses it there too.
    with pytest.raises(Exception, match="SSL"):
        adbc_dbapi.connect(text).close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    key.chmod(0o600)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(os.environ.get("AGTS_LOCAL_OS_USER", "postgres"))
        for path in (cert, key):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return cert, key


@pytest.mark.slow
def test_tls_verify_full_reaches_both_drivers(cluster: Cluster, tmp_path: Path) -> None:
    cert, key = _self_signed(cluster.directory / "data")
    cluster.append_conf(f"\nssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n")
    cluster.stop()
    cluster.start()
    ca = tmp_path / "ca.crt"
    ca.write_bytes(cert.read_bytes())
    cfg = cluster.config(sslmode="verify-full", sslrootcert=str(ca))
    with agts.connect(cfg) as engine:
        with engine.db.connection() as conn:
            assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
                                ).fetchone() == (True,)
        with engine.db.adbc() as conn, conn.cursor() as cur:
            cur.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ssl, version = cur.fetchone()
        assert ssl is True and version.startswith("TLS")
        engine.insert_metrics_batch(seq_points(0, 100, producer="tls"))  # COPY over TLS
        frame = engine.query_metrics("seq", T0, T1, {"producer": "tls"})
        assert frame.height == 100 and frame.schema["value"] == pl.Float64

    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _ = _self_signed(other)
    with pytest.raises(agts.ConnectError, match="certificate verify failed"):
        agts.connect(cluster.config(sslmode="verify-full", sslrootcert=str(wrong_ca)))
    with pytest.raises(agts.ConnectError, match="sslrootcert|root certificate file"):
        agts.connect(cluster.config(sslmode="verify-full", sslrootcert=str(tmp_path / "missing")))
