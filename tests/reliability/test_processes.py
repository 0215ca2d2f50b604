"""Faults that involve whole processes: a producer killed with SIGKILL and restarted on its spool,
two archivers racing on the same range, and a migration interrupted halfway."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import agts
from agts._migrations import MigrationRunner, default_directory
from agts.config import StorageConfig
from agts.db import conninfo
from tests.reliability._data import check_exactly_once, seq_points
from tests.reliability.conftest import (
    Record,
    admin,
    allow_connections,
    idle_in_transaction,
    stored,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]


class Producer:
    """``tests.reliability._producer`` in a child process; follows what it acknowledged."""

    def __init__(self, config: StorageConfig, spool: Path, *args: str) -> None:
        env = {**os.environ, "AGTS_DSN": conninfo(config.database)}
        env.pop("AGTS_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability._producer", "--spool", str(spool), *args],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.acked = 0
        self.closed = False
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("acked "):
                self.acked = int(line.split()[1])
            elif line.strip() == "closed":
                self.closed = True

    def kill(self) -> int:
        acked = self.acked  # what the producer was told before it died
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._reader.join(10)
        return max(acked, self.acked)

    def wait(self, timeout: float = 120) -> str:
        self.proc.wait(timeout)
        self._reader.join(10)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


def test_producer_killed_during_an_outage_restarts_on_its_spool(
    config: StorageConfig, tmp_path: Path, record: Record
) -> None:
    spool = tmp_path / "spool"
    with agts.connect(config) as engine:
        engine.insert_metrics_batch(seq_points(0, 1, producer="p1"))  # the series exists
        first = Producer(config, spool, "--first", "1", "--batch", "200", "--producer", "p1")
        try:
            wait_for(lambda: first.acked >= 2001, 60, "the producer's first acknowledgements")
            allow_connections(config, False)                 # outage: batches go to the spool
            at_outage = first.acked
            wait_for(lambda: len(list(spool.glob("*.arrow"))) >= 3 and first.acked > at_outage + 400,
                     60, "acknowledged batches in the spool")
            acked = first.kill()                             # the fault: SIGKILL, no cleanup
        finally:
            if first.proc.poll() is None:
                first.proc.kill()
            allow_connections(config, True)
        spooled = len(list(spool.glob("*.arrow")))
        assert first.proc.returncode == -signal.SIGKILL

        second = Producer(config, spool, "--first", "1000000", "--batch", "200", "--stop", "2000",
                          "--producer", "p1")
        err = second.wait()
        assert second.proc.returncode == 0 and second.closed, err
        values = stored(engine)
        # Acknowledged: [0, acked) by the first process, all of the second's. The first may also
        # have stored (never spooled) one batch it put but did not live to acknowledge.
        rows = check_exactly_once(values, [*range(acked), *range(1_000_000, 1_002_000)],
                                  may_have=range(acked, acked + 200))
        assert list(spool.glob("*.arrow")) == [] and list(spool.glob("*.tmp")) == []
        assert idle_in_transaction(config) == []
    record("producer SIGKILLed during an outage, restarted on its spool", rows_checked=rows,
           acknowledged_before_kill=acked, acknowledged_only_in_spool=acked - at_outage,
           spool_files_at_kill=spooled, unacknowledged_but_stored=len(values) - acked - 2000,
           duplicates=0, lost=0)


# -- archivers racing --------------------------------------------------------------------------

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 3
N = 6000


def _race(config: StorageConfig, calls: list[dict]) -> list[agts.ArchiveReport | BaseException]:
    barrier = threading.Barrier(len(calls))
    out: list[agts.ArchiveReport | BaseException] = [RuntimeError("not run")] * len(calls)

    def run(i: int, kwargs: dict) -> None:
        try:
            with agts.connect(config) as eng:
                barrier.wait(30)
                out[i] = eng.archive("metrics", DAY0, DAY0 + timedelta(days=DAYS), **kwargs)
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i, kw)) for i, kw in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


@pytest.mark.parametrize("calls", [
    pytest.param([{"drop": True}, {"drop": True}], id="archive-vs-archive"),
    pytest.param([{"drop": False}, {"drop": True}], id="export-vs-archive"),
    pytest.param([{"drop": True}] * 3, id="three-archivers"),
])
def test_archivers_racing_on_one_range_keep_every_row_once(
    config: StorageConfig, tmp_path: Path, calls: list[dict], record: Record
) -> None:
    cfg = config.with_overrides(archive={"root": str(tmp_path / "archive")})
    with agts.connect(cfg) as engine:
        engine.insert_metrics_batch(seq_points(0, N, step_us=DAYS * 86_400_000_000 // N,
                                               start=DAY0))
        reports = _race(cfg, calls)
        errors = [r for r in reports if isinstance(r, BaseException)]
        assert errors == []
        skipped = [r for r in reports if isinstance(r, agts.ArchiveReport) and any(
            "another archive run holds this table" in why for _, why in r.skipped)]
        # Whoever lost the race was told so; a run that came after did what was left.
        engine.archive("metrics", DAY0, DAY0 + timedelta(days=DAYS), drop=True)
        hot = stored(engine)
        cold = engine.query_cold("metrics", DAY0, DAY0 + timedelta(days=DAYS),
                                 metric_name="seq").get_column("value").to_list()
        assert hot == []
        rows = check_exactly_once(hot + cold, range(N))
        with engine.db.connection() as conn:
            states = conn.execute("SELECT state, count(*) FROM agts.archive_units GROUP BY 1"
                                  ).fetchall()
        assert states == [("dropped", DAYS)]
        assert len(list((tmp_path / "archive").rglob("*.parquet"))) == DAYS
        assert idle_in_transaction(cfg) == []
    record("archivers racing on one range", calls=calls, told_another_run_holds_it=len(skipped),
           rows_checked=rows, duplicates=0, lost=0)


ARCHIVE_SCRIPT = """
import sys
from datetime import datetime, timedelta
import agts
day = datetime.fromisoformat(sys.argv[2])
with agts.connect() as engine:
    engine.archive("metrics", day, day + timedelta(days=1), drop=True, root=sys.argv[1])
"""


def test_archive_sigkilled_while_writing_leaves_no_stray_file_after_the_next_run(
    config: StorageConfig, tmp_path: Path, record: Record
) -> None:
    """An archiving process killed while it writes a Parquet file leaves ``.<name>.<hex>.tmp``;
    the next run on that root removes it (and keeps a temporary file a live writer holds), then
    archives the range with every row once."""
    root = tmp_path / "archive"
    day = datetime(2025, 3, 3, tzinfo=UTC)
    n = 2_000_000  # about a second of Parquet writing: time to catch the temporary file
    with agts.connect(config) as engine:
        engine.insert_metrics_batch(seq_points(0, n, step_us=86_400_000_000 // n, start=day))
    env = {**os.environ, "AGTS_DSN": conninfo(config.database)}
    env.pop("AGTS_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-c", ARCHIVE_SCRIPT, str(root), day.isoformat()],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: list(root.rglob(".*.tmp")), 60, "a temporary Parquet file")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stray = list(root.rglob(".*.tmp"))
    assert stray and not list(root.rglob("*.parquet"))
    live = stray[0].parent / ".another.parquet.0123abcd.tmp"  # a live writer's file
    with open(live, "wb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with agts.connect(config) as engine:
            report = engine.archive("metrics", day, day + timedelta(days=1), drop=True,
                                    root=str(root))
            assert (report.units_dropped, report.rows_exported) == (1, n)
            cold = engine.query_cold("metrics", day, day + timedelta(days=1), metric_name="seq",
                                     root=str(root)).get_column("value").to_list()
            rows = check_exactly_once(stored(engine) + cold, range(n))
        assert sorted(p.name for p in root.rglob(".*.tmp")) == [live.name]
    record("archiving process SIGKILLed while writing Parquet", stray_removed=len(stray),
           rows_checked=rows, duplicates=0, lost=0)


# -- a migration interrupted halfway -------------------------------------------------------------

SLOW_MIGRATION = """
CREATE TABLE agts.half_done (x int);
INSERT INTO agts.half_done VALUES (1);
SELECT pg_sleep({sleep});
INSERT INTO agts.half_done VALUES (2);
"""


def _migrations_with(tmp_path: Path, sleep: float) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for f in default_directory().glob("*.sql"):
        (directory / f.name).write_text(f.read_text())
    (directory / "0900_slow.up.sql").write_text(SLOW_MIGRATION.format(sleep=sleep))
    (directory / "0900_slow.down.sql").write_text("DROP TABLE agts.half_done;\n")
    (directory / "0901_after.up.sql").write_text("CREATE TABLE agts.after_slow (x int);\n")
    (directory / "0901_after.down.sql").write_text("DROP TABLE agts.after_slow;\n")
    return directory


def _schema_state(config: StorageConfig) -> tuple[list[int], bool, bool]:
    with psycopg.connect(conninfo(config.database)) as conn:
        versions = [r[0] for r in conn.execute(
            "SELECT version FROM agts.schema_migrations WHERE version >= 900 ORDER BY 1")]
        row = conn.execute("SELECT to_regclass('agts.half_done') IS NOT NULL, "
                           "to_regclass('agts.after_slow') IS NOT NULL").fetchone()
    assert row is not None
    return versions, row[0], row[1]


def _sleeping_pid(config: StorageConfig) -> int:
    pids: list[int] = []

    def probe() -> bool:
        with admin(config) as conn:
            pids[:] = [r[0] for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
                (config.database.database, "%pg_sleep%half_done%"))]
        return bool(pids)

    wait_for(probe, 30, "the migration to reach its pg_sleep")
    return pids[0]


def test_migration_killed_server_side_halfway_is_rolled_back_and_reapplied(
    config: StorageConfig, tmp_path: Path, record: Record
) -> None:
    directory = _migrations_with(tmp_path, sleep=30)
    with agts.connect(config) as engine:
        runner = MigrationRunner(engine.db, directory=directory)
        outcome: list[BaseException] = []
        thread = threading.Thread(target=lambda: outcome.append(_catch(runner.up)))
        thread.start()
        pid = _sleeping_pid(config)
        with admin(config) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        thread.join(30)
        assert isinstance(outcome[0], agts.MigrationError), outcome
        assert "migration 0900_slow failed" in str(outcome[0])
        assert _schema_state(config) == ([], False, False)  # nothing of it, nothing after it
        (directory / "0900_slow.up.sql").write_text(SLOW_MIGRATION.format(sleep=0))
        steps = MigrationRunner(engine.db, directory=directory).up()
        assert [s.version for s in steps] == [900, 901]
        assert _schema_state(config) == ([900, 901], True, True)
        with engine.db.connection() as conn:
            assert conn.execute("SELECT x FROM agts.half_done ORDER BY x").fetchall() == [(1,), (2,)]
    record("migration backend terminated halfway", partial_steps_visible=0, reapplied_once=True)


def _catch(fn: object) -> BaseException | None:
    try:
        fn()  # type: ignore[operator]
    except BaseException as exc:
        return exc
    return None


MIGRATE_SCRIPT = """
import sys
from pathlib import Path
import agts
from agts._migrations import MigrationRunner
with agts.connect() as engine:
    MigrationRunner(engine.db, directory=Path(sys.argv[1])).up()
"""


def test_migrating_process_sigkilled_halfway_leaves_no_trace_and_no_lock(
    config: StorageConfig, tmp_path: Path, record: Record
) -> None:
    directory = _migrations_with(tmp_path, sleep=2)
    env = {**os.environ, "AGTS_DSN": conninfo(config.database)}
    proc = subprocess.Popen([sys.executable, "-c", MIGRATE_SCRIPT, str(directory)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _sleeping_pid(config)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _schema_state(config) == ([], False, False)
    # The server ends the orphaned session when the sleep returns: the transaction is rolled
    # back and the session's advisory lock is released, so the next runner gets through.
    started = time.monotonic()
    with agts.connect(config) as engine:
        steps = MigrationRunner(engine.db, directory=directory, lock_timeout_sec=30).up()
    assert [s.version for s in steps] == [900, 901]
    assert _schema_state(config) == ([900, 901], True, True)
    with psycopg.connect(conninfo(config.database)) as conn:
        assert conn.execute("SELECT x FROM agts.half_done ORDER BY x").fetchall() == [(1,), (2,)]
    record("migrating process SIGKILLed halfway", waited_for_orphan_sec=round(
        time.monotonic() - started, 2), partial_steps_visible=0, reapplied_once=True)
