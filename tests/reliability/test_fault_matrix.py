"""Every public entry point through every fault, set up for real: the answer is always an agts
error that names what failed, never a driver's exception.

The faults: the server stopped before the call; the backend terminated mid-call (another session
holds ACCESS EXCLUSIVE locks on every ``agts`` table, the call's backend waits, it is terminated);
a login with only the reader role where a write is needed; a missing, read-only and full archive
root; a deleted, truncated and header-corrupted Parquet file of an archived and dropped range.
The pure functions of :mod:`agts.positions` get malformed frames instead.

Every caught error must be an :class:`agts.StorageError` of a class agts presents as its own
(``type(err).__module__`` is ``agts``), with a message that is not empty, names the object (a
table, metric, file, root, database or order; the concrete fragments are in the tables below) and
shows no password.

The entry points are one table (:data:`ENTRIES`): a name, a callable taking the prepared parts
(:class:`World`) and the fragments its message may name. The prepared parts are module-wide (one
database per group of faults), so the whole file stays quick.

The server-stopped fault runs on a private cluster of its own (the ``cluster`` fixture), not the
shared local one: other sessions use that one while this file runs, and stopping it would fail
their tests.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psycopg
import pytest
from psycopg import sql

import agts
from agts import Fill, MetricPoint, Order, PositionSnapshot, RiskDecision
from agts import positions as pos
from agts.config import StorageConfig
from agts.db import _local, conninfo
from tests.conftest import _drop_database, _new_database
from tests.reliability.conftest import Call, Cluster, Record, admin, idle_in_transaction

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)  # metric chunks are 1 day wide
WEEK0 = datetime(2024, 1, 4, tzinfo=UTC)  # a Thursday: execution chunks are 7 days, epoch-aligned
DAY = timedelta(days=1)
METRIC_SPAN = (DAY0, DAY0 + 3 * DAY)  # days 0 and 1 archived and dropped, day 2 hot
EXEC_SPAN = (WEEK0, WEEK0 + 14 * DAY)  # fills of week 0 archived and dropped, week 1 hot
ARCHIVED = (("metrics", DAY0, DAY0 + 2 * DAY), ("fills", WEEK0, WEEK0 + 7 * DAY))
NOW = DAY0 + timedelta(days=200)  # retention's reference time: every prepared chunk has expired
O1, O2 = uuid.UUID(int=1), uuid.UUID(int=2)  # an order of week 0 (its fill archived), one of week 1


# -- the prepared parts ----------------------------------------------------------------------------


@dataclass
class World:
    """One prepared database: metrics and execution history, part of it archived and dropped."""

    config: StorageConfig
    engine: agts.StorageEngine
    store: agts.ExecutionStore
    root: Path
    secrets: tuple[str, ...] = ()
    tables: list[str] = field(default_factory=list)

    @property
    def database(self) -> str:
        return self.config.database.database


def _points(days: int = 3, per_day: int = 240) -> pl.DataFrame:
    n = days * per_day
    step = DAY / per_day
    return pl.DataFrame({
        "timestamp": pl.Series([DAY0 + i * step for i in range(n)], dtype=pl.Datetime("us", "UTC")),
        "metric_name": ["latency" if i % 4 else "pnl" for i in range(n)],
        "value": np.random.default_rng(7).normal(100.0, 15.0, n),
        "labels": [{"venue": "x"} if i % 2 else {"venue": "y"} for i in range(n)],
    })


def _new_points() -> pl.DataFrame:
    """Points of the hot day that are not stored yet."""
    ts = [DAY0 + 2 * DAY + timedelta(minutes=30, microseconds=i + 1) for i in range(5)]
    return pl.DataFrame({"timestamp": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
                         "metric_name": ["latency"] * 5, "value": [1.0] * 5,
                         "labels": [{"venue": "x"}] * 5})


def _order(n: int, at: datetime) -> Order:
    return Order(id=uuid.UUID(int=n), timestamp=at, venue="v", market="BTC-USD", side="buy",
                 order_type="limit", price=100.0, size=1.0, status="new", client_order_id=f"c{n}")


def _fill(n: int, order: uuid.UUID, at: datetime, size: float = 0.01) -> Fill:
    return Fill(id=uuid.UUID(int=n), timestamp=at, order_id=order, venue="v", market="BTC-USD",
                side="buy", price=100.0, size=size, fee=0.0, fee_currency="USD")


def _snapshot(n: int) -> PositionSnapshot:
    return PositionSnapshot(timestamp=WEEK0 + 9 * DAY + timedelta(minutes=n), market="BTC-USD",
                            size=0.5, avg_entry_price=100.0)


def _decision(n: int) -> RiskDecision:
    return RiskDecision(id=uuid.UUID(int=n), timestamp=WEEK0 + 9 * DAY + timedelta(minutes=n),
                        policy="max_position", decision="allow", reason="within limits",
                        details={"n": n}, market="BTC-USD", order_id=O2)


def _quotes(n: int) -> pl.DataFrame:
    return pl.DataFrame({"timestamp": [WEEK0 + 9 * DAY + timedelta(minutes=n)], "venue": ["v"],
                         "market": ["BTC-USD"], "bid": [99.0], "ask": [101.0]})


def _events(n: int) -> pl.DataFrame:
    return pl.DataFrame({"timestamp": [WEEK0 + 8 * DAY + timedelta(hours=3, minutes=n)],
                         "order_id": [str(O2)], "status": ["partially_filled"]})


def _prepare(engine: agts.StorageEngine, store: agts.ExecutionStore) -> None:
    """Idempotent: storing the same records again is a no-op, archiving again too."""
    engine.insert_metrics_batch(_points())
    store.store_orders([_order(1, WEEK0 + timedelta(hours=1)), _order(2, WEEK0 + 8 * DAY)])
    store.store_fills([_fill(101, O1, WEEK0 + timedelta(hours=2), 0.5),
                       _fill(102, O2, WEEK0 + 8 * DAY + timedelta(hours=1), 0.25)])
    store.store_position_snapshot(_snapshot(0))
    store.store_risk_decision(_decision(201))
    store.store_quotes(_quotes(0))
    for table, start, end in ARCHIVED:
        engine.archive(table, start, end, drop=True)
    with engine.db.connection() as conn:
        dropped = conn.execute("SELECT table_name, count(*) FROM agts.archive_units "
                               "WHERE state = 'dropped' GROUP BY 1 ORDER BY 1").fetchall()
    assert dropped == [("fills", 1), ("metrics", 2)], dropped
    engine.refresh_rollups()


def _agts_tables(engine: agts.StorageEngine) -> list[str]:
    with engine.db.connection() as conn:
        return [r[0] for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname = 'agts' ORDER BY 1").fetchall()]


def _views(con: Any) -> list[str]:
    """The views of a DuckDB connection from :meth:`agts.StorageEngine.cold`, which it closes."""
    try:
        return sorted(r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall())
    finally:
        con.close()


def _temporary(config: StorageConfig) -> str:
    with agts.temporary_database(config) as cfg:
        return cfg.database.database


@contextmanager
def _world(base_config: StorageConfig, template: str, root: Path) -> Iterator[World]:
    """An engine on a new migrated database of its own (dropped after), archiving under ``root``."""
    name = _new_database(base_config, template)
    try:
        cfg = base_config.with_overrides(database={"database": name}, archive={"root": str(root)})
        with agts.connect(cfg) as engine:
            yield World(cfg, engine, agts.ExecutionStore(engine), root,
                        secrets=tuple(s for s in (cfg.database.password,) if s),
                        tables=_agts_tables(engine))
    finally:
        _drop_database(base_config, name)


@pytest.fixture(scope="module")
def db_world(base_config: StorageConfig, template_database: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The prepared database of the lock and reader faults (neither may change it)."""
    with _world(base_config, template_database, tmp_path_factory.mktemp("archive")) as world:
        _prepare(world.engine, world.store)
        yield world


# -- the checks ------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A one-line description of what a call returned instead of raising."""
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} {shape}" if shape is not None else repr(value)[:300]


def outcome(fn: Callable[[], Any]) -> tuple[Any, BaseException | None]:
    """``fn()``'s result, or the exception it raised."""
    try:
        return fn(), None
    except Exception as exc:
        return None, exc


def problem(err: BaseException | None, names: tuple[str, ...], *,
            cls: type[agts.StorageError] = agts.StorageError,
            secrets: tuple[str, ...] = ()) -> str | None:
    """What is wrong with ``err`` as the answer to a fault (None: nothing)."""
    if err is None:
        return "no error was raised"
    kind = f"{type(err).__module__}.{type(err).__qualname__}"
    if not isinstance(err, cls):
        return f"{kind} is not an agts.{cls.__name__}: {str(err)[:500]!r}"
    module = type(err).__module__
    if module != "agts" and not module.startswith("agts."):
        return f"{kind} is not presented as an agts class: {err}"
    message = str(err)
    if not message.strip():
        return f"{kind} has an empty message"
    for secret in secrets:
        if secret and secret in message:
            return f"{kind} shows a password: {message!r}"
    if not any(name in message for name in names):
        return f"{kind} names none of {names!r}: {message!r}"
    return None


@dataclass(frozen=True)
class Entry:
    """A public entry point: ``call`` runs it on the prepared parts; its error message must hold
    one of ``names`` (or the database's name)."""

    name: str
    call: Callable[[World], Any]
    names: tuple[str, ...]
    database: bool = True  # touches the database
    writes: bool = False  # needs to write (a reader must be refused)
    waits_on_lock: bool = True  # waits when another session locks the agts tables

    def __str__(self) -> str:
        return self.name


def _after(hours: float, minutes: int = 0) -> datetime:
    return WEEK0 + 8 * DAY + timedelta(hours=hours, minutes=minutes)


ENTRIES: list[Entry] = [
    # -- the engine: schema, ingest, queries
    Entry("engine.migrate", lambda w: w.engine.migrate(), ("migration",)),
    Entry("engine.insert_metric", lambda w: w.engine.insert_metric(MetricPoint(
        DAY0 + 2 * DAY + timedelta(hours=5), "latency", 1.0, {"venue": "x"})), ("metric",),
        writes=True),
    Entry("engine.insert_metrics_batch", lambda w: w.engine.insert_metrics_batch(_new_points()),
          ("metric",), writes=True),
    Entry("engine.query_metrics[hot]", lambda w: w.engine.query_metrics("latency", *METRIC_SPAN),
          ("metric", "latency")),
    Entry("engine.query_metrics[all]", lambda w: w.engine.query_metrics(
        "latency", *METRIC_SPAN, tiers="all"), ("metric", "latency")),
    Entry("engine.query_aggregated[all]", lambda w: w.engine.query_aggregated(
        "latency", *METRIC_SPAN, "1h", ["avg", "p90"], tiers="all"), ("metric", "latency")),
    Entry("engine.query_metrics_multi[all]", lambda w: w.engine.query_metrics_multi(
        ["latency", "pnl"], *METRIC_SPAN, tiers="all"), ("metric", "latency")),
    Entry("engine.refresh_rollups", lambda w: w.engine.refresh_rollups(), ("rollup",),
          writes=True),
    Entry("engine.rollup_status", lambda w: w.engine.rollup_status(), ("rollup",)),
    # -- the engine: cold tier, retention, storage
    # With drop=True it refreshes the rollups first: an error there names the rollup.
    Entry("engine.archive", lambda w: w.engine.archive(
        "metrics", DAY0 + 2 * DAY, DAY0 + 3 * DAY, drop=True), ("metric", "rollup"),
        writes=True),
    Entry("engine.export_cold", lambda w: w.engine.export_cold(
        "metrics", DAY0 + 2 * DAY, DAY0 + 3 * DAY), ("metric",), writes=True),
    Entry("engine.restore", lambda w: w.engine.restore("metrics", *METRIC_SPAN), ("metric",),
          writes=True),
    Entry("engine.query_cold", lambda w: w.engine.query_cold("metrics", *METRIC_SPAN),
          ("metric",)),
    Entry("engine.verify_cold", lambda w: w.engine.verify_cold("metrics"), ("archive",)),
    Entry("engine.run_retention", lambda w: w.engine.run_retention(now=NOW),
          ("retention", "agts."), writes=True),
    Entry("engine.storage_report", lambda w: w.engine.storage_report(), ("storage",)),
    Entry("engine.storage_report[chunk]", lambda w: w.engine.storage_report(by="chunk"),
          ("storage",)),
    # -- the execution store: writes (new records, so every one needs a write)
    Entry("store.store_order", lambda w: w.store.store_order(_order(1001, _after(4))),
          ("order",), writes=True),
    Entry("store.store_orders", lambda w: w.store.store_orders([_order(1002, _after(5))]),
          ("order",), writes=True),
    Entry("store.store_fill", lambda w: w.store.store_fill(_fill(1003, O2, _after(2))),
          ("fill",), writes=True),
    Entry("store.store_fills", lambda w: w.store.store_fills([_fill(1004, O2, _after(2, 1))]),
          ("fill",), writes=True),
    Entry("store.store_position_snapshot", lambda w: w.store.store_position_snapshot(
        _snapshot(5)), ("position",), writes=True),
    Entry("store.store_position_snapshots", lambda w: w.store.store_position_snapshots(
        [_snapshot(6)]), ("position",), writes=True),
    Entry("store.store_risk_decision", lambda w: w.store.store_risk_decision(_decision(1005)),
          ("risk",), writes=True),
    Entry("store.store_risk_decisions", lambda w: w.store.store_risk_decisions(
        [_decision(1006)]), ("risk",), writes=True),
    Entry("store.store_quotes", lambda w: w.store.store_quotes(_quotes(7)), ("quote",),
          writes=True),
    Entry("store.update_order_status", lambda w: w.store.update_order_status(
        O2, "partially_filled", _after(3), filled_size=0.25), ("order",), writes=True),
    Entry("store.store_order_events", lambda w: w.store.store_order_events(_events(1)),
          ("order",), writes=True),
    # -- the execution store: reads
    Entry("store.query_orders[all]", lambda w: w.store.query_orders(*EXEC_SPAN, tiers="all"),
          ("order",)),
    Entry("store.query_fills[hot]", lambda w: w.store.query_fills(*EXEC_SPAN), ("fill",)),
    Entry("store.query_fills[all]", lambda w: w.store.query_fills(*EXEC_SPAN, tiers="all"),
          ("fill",)),
    Entry("store.query_positions", lambda w: w.store.query_positions("BTC-USD", *EXEC_SPAN),
          ("position",)),
    Entry("store.query_risk_decisions", lambda w: w.store.query_risk_decisions(*EXEC_SPAN),
          ("risk",)),
    Entry("store.query_quotes", lambda w: w.store.query_quotes("BTC-USD", *EXEC_SPAN),
          ("quote",)),
    Entry("store.order_state", lambda w: w.store.order_state(O2), ("order",)),
    Entry("store.order_history", lambda w: w.store.order_history(O2), ("order",)),
    # -- functions of agts. Neither waits on an agts table lock: connect only reads the server's
    # settings, temporary_database works in databases of its own.
    Entry("agts.connect", lambda w: agts.connect(w.config).close(), (),
          waits_on_lock=False),
    Entry("agts.temporary_database", lambda w: _temporary(w.config), ("agts_tmp",),
          writes=True, waits_on_lock=False),
    # -- readers of the cold tier: its Iceberg catalog lives in the database
    Entry("engine.cold", lambda w: _views(w.engine.cold()), ("archive", "Iceberg")),
    Entry("engine.scan_cold", lambda w: w.engine.scan_cold("metrics"), ("archive", "Iceberg")),
    Entry("agts.cold", lambda w: _views(agts.cold(str(w.root), config=w.config)),
          ("archive", "Iceberg")),
    # -- no database at all: these must keep working while the server is away
    Entry("engine.query_stats", lambda w: w.engine.query_stats(), ("query",), database=False),
    Entry("engine.clear_query_cache", lambda w: w.engine.clear_query_cache(), ("query",),
          database=False),
]
BY_NAME = {e.name: e for e in ENTRIES}


# -- the server stopped before the call ------------------------------------------------------------


@pytest.fixture(scope="module")
def private(request: pytest.FixtureRequest) -> Cluster:
    """The private cluster of this module (``cluster``); skips where none can be run."""
    status = _local.status()
    if not (status.bindir and status.timescaledb_installed):
        pytest.skip("stopping a server needs a private cluster of PostgreSQL with TimescaleDB on "
                    "this machine (agts local start installs one); none is available here")
    cluster: Cluster = request.getfixturevalue("cluster")
    return cluster


@pytest.fixture(scope="module")
def stopped_world(private: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The prepared parts on the private cluster, with a 1 s connection timeout."""
    root = tmp_path_factory.mktemp("archive-private")
    cfg = private.config(connection_timeout_sec=1).with_overrides(archive={"root": str(root)})
    with agts.connect(cfg) as engine:
        world = World(cfg, engine, agts.ExecutionStore(engine), root,
                      secrets=tuple(s for s in (private.password,) if s))
        _prepare(engine, world.store)
        yield world


def _ingest_through_an_outage(ing: agts.Ingestor) -> list[str]:
    """put, flush and close while the server is away: no error, the batch waits in the spool."""
    problems = []
    for step, fn in (("put", lambda: ing.put(_new_points())),
                     ("flush", lambda: ing.flush(timeout=60)),
                     ("close", lambda: ing.close(timeout=60))):
        _, err = outcome(fn)
        if err is not None:
            problems.append(f"ingestor.{step}: {type(err).__module__}.{type(err).__qualname__}: "
                            f"{err}")
    stats = ing.stats()
    if stats.points_lost or stats.spool_pending < 1:
        problems.append(f"ingestor: the outage's points are not waiting in the spool: {stats}")
    return problems


@pytest.mark.slow  # a server stop and start
def test_server_stopped_every_entry_point_is_a_transient_connect_error(
    private: Cluster, stopped_world: World, tmp_path: Path, record: Record
) -> None:
    """One stop and start for every entry point (they run four at a time: each waits out the
    connection timeout). Entry points that need no database must keep working."""
    w = stopped_world
    spool = tmp_path / "spool"
    ing = w.engine.ingestor(spool_dir=spool, flush_interval_ms=20)
    failures: list[str] = []
    pool = ThreadPoolExecutor(max_workers=4)
    private.stop()
    try:
        ingest = pool.submit(_ingest_through_an_outage, ing)
        futures = [(e, pool.submit(outcome, partial(e.call, w))) for e in ENTRIES]
        for entry, future in futures:
            try:
                result, err = future.result(timeout=120)
            except TimeoutError:
                failures.append(f"{entry}: no answer within 120 s while the server was stopped")
                continue
            if not entry.database:
                if err is not None:
                    failures.append(f"{entry}: needs no database but raised "
                                    f"{type(err).__module__}.{type(err).__qualname__}: {err}")
                continue
            found = problem(err, (*entry.names, w.database), cls=agts.ConnectError,
                            secrets=w.secrets)
            if found is None and not getattr(err, "transient", False):
                found = f"not transient: {err}"
            if found is not None:
                failures.append(f"{entry}: {found}" + (
                    f" (returned {_short(result)})" if err is None else ""))
        failures += ingest.result(timeout=180)
    finally:
        private.start()  # also when something above failed: later tests need the server
        pool.shutdown(wait=True)
    # Back up: the same engine answers again (the pool reconnects on its own schedule, so not
    # necessarily at once) and the spool is replayed.
    recovered = _answers_again(w)
    again = w.engine.ingestor(spool_dir=spool)
    again.close(timeout=60)
    assert again.stats().spool_pending == 0 and again.stats().replayed_batches >= 1
    record("server stopped before the call", entry_points=len(ENTRIES),
           failures=len(failures), engine_answered_again_after_sec=round(recovered, 2))
    assert not failures, "\n".join(failures)


def _answers_again(w: World, timeout: float = 60) -> float:
    """Seconds until the engine answers a query again after a restart."""
    began = time.monotonic()
    while True:
        result, err = outcome(lambda: w.engine.query_metrics("latency", *METRIC_SPAN, tiers="all"))
        if err is None:
            assert result.height >= 540
            return time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"the engine did not answer within {timeout}s of the restart: "
                                 f"{err!r}")
        time.sleep(0.2)


@pytest.mark.slow  # a server stop and start
def test_a_warm_engine_answers_at_once_after_a_server_restart(
    private: Cluster, stopped_world: World
) -> None:
    """The psycopg pool checks a connection before handing it out; the engine's idle ADBC
    connections must not outlive the server either: the first call after the restart works."""
    w = stopped_world
    _answers_again(w)
    w.engine.insert_metrics_batch(_new_points())  # warm: idle ADBC and psycopg connections
    w.store.query_fills(*EXEC_SPAN)
    w.engine.query_metrics("latency", *METRIC_SPAN)
    private.stop()
    private.start()
    failures = []
    for name, fn in (("engine.insert_metrics_batch", lambda: w.engine.insert_metrics_batch(
                          _new_points())),
                     ("store.query_fills", lambda: w.store.query_fills(*EXEC_SPAN)),
                     ("engine.query_metrics", lambda: w.engine.query_metrics(
                         "latency", *METRIC_SPAN))):
        _, err = outcome(fn)
        if err is not None:
            failures.append(f"{name}: {type(err).__module__}.{type(err).__qualname__}: {err}")
    assert not failures, "\n".join(failures)


# -- the backend terminated mid-call ---------------------------------------------------------------


def terminated_mid_call(w: World, fn: Callable[[World], Any]
                        ) -> tuple[str | None, Any, BaseException | None]:
    """Hold ACCESS EXCLUSIVE locks on every ``agts`` table in another session, run ``fn(w)`` in a
    thread, terminate the backend of the test database that waits on a lock (not the locker),
    release the locks. Returns the statement that waited (None: nothing waited), and the call's
    result or error."""
    waited = None
    with psycopg.connect(conninfo(w.config.database)) as locker, admin(w.config) as watch:
        locker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.SQL(", ").join(sql.SQL(t) for t in w.tables)))  # names quoted by format(%I)
        call = Call(lambda: fn(w))
        deadline = time.monotonic() + 20
        while waited is None and not call.done() and time.monotonic() < deadline:
            row = watch.execute(
                "SELECT pid, left(query, 100) FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock' AND pid <> %s LIMIT 1",
                (w.database, locker.info.backend_pid)).fetchone()
            if row is None:
                time.sleep(0.02)
                continue
            watch.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            waited = str(row[1])
        locker.rollback()
    call.join(60)
    return waited, call.result, call.error


# The ingestor is left out: it retries a lost connection by design and stores the batch once
# (tests/reliability/test_faults.py). Entries with ``waits_on_lock=False`` never wait on a lock.
LOCKED = [e for e in ENTRIES if e.database and e.waits_on_lock]


@pytest.mark.parametrize("entry", LOCKED, ids=str)
def test_backend_terminated_mid_call_is_a_transient_storage_error(
    db_world: World, entry: Entry
) -> None:
    waited, result, err = terminated_mid_call(db_world, entry.call)
    assert waited is not None, (
        f"{entry} never waited on a lock: returned {type(result).__name__}, raised {err!r}")
    found = problem(err, (*entry.names, db_world.database), secrets=db_world.secrets)
    assert found is None, f"{entry} (its backend waited in {waited!r}): {found}"
    assert getattr(err, "transient", False), f"a lost connection is worth a retry: {err!r}"
    assert idle_in_transaction(db_world.config) == []


@pytest.mark.parametrize("name", ["engine.query_metrics[hot]", "store.query_fills[hot]"])
def test_a_terminated_backend_is_a_connect_error_on_either_driver(
    db_world: World, name: str
) -> None:
    """query_metrics loses its psycopg connection (the cache check waits first), query_fills its
    ADBC one: the same fault, so the same class (tests/reliability/test_faults.py expects
    ConnectError for a backend killed mid-query)."""
    waited, _, err = terminated_mid_call(db_world, BY_NAME[name].call)
    assert waited is not None
    assert isinstance(err, agts.ConnectError), (
        f"{name}: {type(err).__qualname__} (sqlstate {getattr(err, 'sqlstate', None)!r}): {err}")


# -- a reader where a write is needed --------------------------------------------------------------


@pytest.fixture(scope="module")
def reader(db_world: World) -> Iterator[World]:
    """The prepared parts as a login with only the reader role."""
    prefix = f"fm{uuid.uuid4().hex[:8]}"
    names = agts.create_roles(db_world.engine, prefix=prefix)
    login, password = f"{prefix}_login", f"Rd-{uuid.uuid4().hex}"
    roles = [names.reader, names.writer, names.admin]
    try:
        with db_world.engine.db.connection() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(login), sql.Literal(password)))
        roles.insert(0, login)
        agts.grant_role(db_world.engine, names.reader, to=login)
        cfg = db_world.config.with_overrides(database={"user": login, "password": password})
        with agts.connect(cfg) as engine:
            yield World(cfg, engine, agts.ExecutionStore(engine), db_world.root,
                        secrets=(password, *db_world.secrets), tables=db_world.tables)
    finally:
        with db_world.engine.db.connection() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", (login,))
            for role in roles:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with db_world.engine.db.connection() as conn:
            for role in roles:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _stored(w: World) -> tuple[dict[str, int], list[str]]:
    """Rows of every agts table and the files under the archive root."""
    with w.engine.db.connection() as conn:
        rows = {t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(t)))
                       .fetchone()[0]) for t in w.tables}  # type: ignore[index]
    return rows, sorted(str(p.relative_to(w.root)) for p in w.root.rglob("*") if p.is_file())


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.writes], ids=str)
def test_reader_where_a_write_is_needed_is_refused_and_stores_nothing(
    reader: World, db_world: World, entry: Entry
) -> None:
    before = _stored(db_world)
    _, err = outcome(lambda: entry.call(reader))
    found = problem(err, (*entry.names, reader.database), secrets=reader.secrets)
    assert found is None, f"{entry}: {found}"
    # PostgreSQL's own words: "permission denied for table ...", or (TimescaleDB's policies on
    # Community) "must be owner of hypertable ...".
    assert "permission denied" in str(err) or "must be owner" in str(err), (
        f"{entry}: the message does not say why: {err}")
    assert not getattr(err, "transient", True), f"{entry}: a missing privilege is terminal: {err!r}"
    assert _stored(db_world) == before, f"{entry}: the reader's call changed something"


def test_reader_migrate_needs_no_write_when_up_to_date(reader: World) -> None:
    assert reader.engine.migrate() == []


def test_reader_ingestor_sets_the_refused_batch_aside_and_stores_nothing(
    reader: World, db_world: World, tmp_path: Path
) -> None:
    """The ingestor never raises what the database refuses: the batch goes to ``failed/``, the
    reason to ``stats().last_error``."""
    before = _stored(db_world)
    ing = reader.engine.ingestor(spool_dir=tmp_path / "spool", flush_interval_ms=10)
    ing.put(_new_points())
    ing.flush(timeout=30)
    ing.close(timeout=30)
    stats = ing.stats()
    assert (stats.failed_batches, stats.points_lost, stats.points_written) == (1, 0, 0), stats
    assert "permission denied" in (stats.last_error or "") and "series" in (stats.last_error or "")
    assert len(list((tmp_path / "spool" / "failed").glob("*.arrow"))) == 1
    assert _stored(db_world) == before


# -- the archive root: missing, read-only, full ----------------------------------------------------


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A read-only tmpfs and a 256 KiB one (a real EROFS and ENOSPC); skips where mounting is not
    allowed."""
    base = tmp_path_factory.mktemp("mounts")
    made: list[Path] = []
    try:
        for kind, options in (("read-only", "ro,size=256k"), ("full", "size=256k")):
            path = base / kind
            path.mkdir()
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
            made.append(path)
        yield {p.name: p for p in made}
    finally:
        for path in made:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(scope="module")
def roots_world(base_config: StorageConfig, template_database: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Hot metrics only; day 0 holds 60 000 random values, more than 256 KiB of Parquet."""
    with _world(base_config, template_database, tmp_path_factory.mktemp("unused")) as world:
        n = 60_000
        world.engine.insert_metrics_batch(_points())
        world.engine.insert_metrics_batch(pl.DataFrame({
            "timestamp": pl.Series([DAY0 + timedelta(seconds=i) for i in range(n)],
                                   dtype=pl.Datetime("us", "UTC")),
            "metric_name": ["big"] * n, "value": np.random.default_rng(1).normal(size=n),
            "labels": [{"k": "v"}] * n}))
        yield world


WRITERS: dict[str, Callable[[agts.StorageEngine], Any]] = {
    "engine.archive": lambda e: e.archive("metrics", DAY0, DAY0 + DAY, drop=True),
    "engine.export_cold": lambda e: e.export_cold("metrics", DAY0, DAY0 + DAY),
    "engine.run_retention": lambda e: e.run_retention(now=NOW),
}


def _hot_points(w: World) -> int:
    with w.engine.db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("kind", ["read-only", "full"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_archive_root_read_only_or_full_is_an_archive_error_naming_it(
    roots_world: World, mounts: dict[str, Path], kind: str, name: str
) -> None:
    root = mounts[kind]
    before = _hot_points(roots_world)
    cfg = roots_world.config.with_overrides(archive={"root": str(root)})
    try:
        with agts.connect(cfg) as engine:
            _, err = outcome(lambda: WRITERS[name](engine))
        found = problem(err, (str(root),), cls=agts.ArchiveError, secrets=roots_world.secrets)
        assert found is None, f"{name} into a {kind} root: {found}"
        if kind == "full":
            assert "full" in str(err) and getattr(err, "transient", False), repr(err)
        assert _hot_points(roots_world) == before, "rows left the hot tier without an archive"
        assert list(root.rglob("*.tmp")) == [], "a temporary file was left behind"
    finally:
        if kind == "full":
            for child in root.iterdir():
                shutil.rmtree(child, ignore_errors=True)


# -- a damaged Parquet file of an archived, dropped range, and the root gone -----------------------


@dataclass
class Files:
    """The prepared parts of the file faults, with the archive's files as written."""

    world: World
    pristine: dict[Path, bytes]

    def file(self, table: str) -> Path:
        """The first archived file of ``table``."""
        return min(p for p in self.pristine if p.name.startswith(f"{table}-"))

    def reset(self) -> None:
        """Put every file and the root back; drop again what a call may have restored."""
        gone = self.world.root.with_name(self.world.root.name + ".gone")
        if gone.exists():
            gone.rename(self.world.root)
        for path, data in self.pristine.items():
            path.write_bytes(data)
        for table, start, end in ARCHIVED:
            self.world.engine.archive(table, start, end, drop=True)
        self.world.engine.clear_query_cache()


@pytest.fixture(scope="module")
def files(base_config: StorageConfig, template_database: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Files]:
    with _world(base_config, template_database, tmp_path_factory.mktemp("cold")) as world:
        _prepare(world.engine, world.store)
        pristine = {p: p.read_bytes() for p in world.root.rglob("*.parquet")}
        assert len(pristine) == 3  # two days of metrics, one week of fills
        yield Files(world, pristine)


def _damage(path: Path, kind: str, data: bytes) -> None:
    if kind == "deleted":
        path.unlink()
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # header-corrupted
        path.write_bytes(b"\x00" * 16 + data[16:])


# (name, archived table whose first file is damaged, the call). Each must raise an ArchiveError
# naming the file, and change nothing.
READERS_OF_FILES: list[Any] = [
    ("engine.query_cold", "metrics", BY_NAME["engine.query_cold"].call),
    ("engine.query_metrics[all]", "metrics", BY_NAME["engine.query_metrics[all]"].call),
    ("engine.query_aggregated[all]", "metrics", BY_NAME["engine.query_aggregated[all]"].call),
    ("engine.query_metrics_multi[all]", "metrics",
     BY_NAME["engine.query_metrics_multi[all]"].call),
    ("store.query_fills[all]", "fills", BY_NAME["store.query_fills[all]"].call),
    ("store.query_orders[all]", "fills", BY_NAME["store.query_orders[all]"].call),
    ("engine.restore[metrics]", "metrics", BY_NAME["engine.restore"].call),
    ("engine.restore[fills]", "fills", lambda w: w.engine.restore("fills", *EXEC_SPAN)),
    # The range is archived and dropped: its files are the only copy of its rows.
    pytest.param("engine.archive[re-run]", "metrics", lambda w: w.engine.archive(
        "metrics", DAY0, DAY0 + 2 * DAY, drop=True), marks=pytest.mark.xfail(
            strict=True, reason="a re-run skips dropped units without re-reading their files; "
                                "checking the only copy on every run is for the cold-tier "
                                "verify of issue #15")),
]
# cold() hands back a DuckDB connection and scan_cold() a Polars LazyFrame: what the user's own
# .sql() or .collect() raises later is DuckDB's or Polars'. The calls themselves read no rows, so
# the expectation here: they return, or raise an ArchiveError naming the file; never a raw error.
LAZY = ("engine.cold", "agts.cold", "engine.scan_cold")
DAMAGES = ("deleted", "truncated", "header-corrupted")


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize(("name", "table", "call"), READERS_OF_FILES,
                         ids=[getattr(r, "values", r)[0] for r in READERS_OF_FILES])
def test_damaged_parquet_file_is_an_archive_error_naming_it(
    files: Files, damage: str, name: str, table: str, call: Callable[[World], Any]
) -> None:
    w, path = files.world, files.file(table)
    try:
        _damage(path, damage, files.pristine[path])
        w.engine.clear_query_cache()
        before = _stored(w)
        result, err = outcome(lambda: call(w))
        found = problem(err, (path.name,), cls=agts.ArchiveError, secrets=w.secrets)
        assert found is None, f"{name} with a {damage} file: {found}" + (
            f" (returned {_short(result)})" if err is None else "")
        assert _stored(w) == before, f"{name} changed something before it failed"
    finally:
        files.reset()


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", LAZY)
def test_damaged_parquet_file_lazy_readers_raise_no_raw_error(
    files: Files, damage: str, name: str
) -> None:
    w, path = files.world, files.file("metrics")
    try:
        _damage(path, damage, files.pristine[path])
        _, err = outcome(lambda: BY_NAME[name].call(w))
        if err is not None:
            found = problem(err, (path.name,), cls=agts.ArchiveError, secrets=w.secrets)
            assert found is None, f"{name} with a {damage} file: {found}"
    finally:
        files.reset()


MISSING_ROOT = ["engine.query_cold", "engine.query_metrics[all]", "store.query_fills[all]",
                "engine.restore", "engine.cold", "agts.cold", "engine.scan_cold"]


@pytest.mark.parametrize("name", MISSING_ROOT)
def test_missing_archive_root_is_an_archive_error_naming_it(files: Files, name: str) -> None:
    """The root of dropped ranges is gone (an unmounted disk): readers say so, naming it."""
    w = files.world
    try:
        w.root.rename(w.root.with_name(w.root.name + ".gone"))
        w.engine.clear_query_cache()
        result, err = outcome(lambda: BY_NAME[name].call(w))
        found = problem(err, (str(w.root),), cls=agts.ArchiveError, secrets=w.secrets)
        assert found is None, f"{name} with the root {str(w.root)!r} missing: {found}" + (
            f" (returned {_short(result)})" if err is None else "")
    finally:
        files.reset()


# -- agts.positions: malformed frames --------------------------------------------------------------

T = datetime(2026, 1, 1, tzinfo=UTC)
FILLS = pl.DataFrame({"timestamp": [T, T + timedelta(minutes=1)], "market": ["BTC-USD"] * 2,
                      "side": ["buy", "sell"], "price": [100.0, 110.0], "size": [1.0, 0.5],
                      "fee": [0.1, 0.1]})
MARKS = pl.DataFrame({"timestamp": [T + timedelta(seconds=30)], "market": ["BTC-USD"],
                      "mid": [105.0]})
SNAPSHOTS = pl.DataFrame({"timestamp": [T + timedelta(minutes=2)], "market": ["BTC-USD"],
                          "size": [0.5], "avg_entry_price": [100.0], "realized_pnl": [5.0]})


def _derived() -> pl.DataFrame:
    return pos.from_fills(FILLS)


def _with(frame: pl.DataFrame, column: str, value: Any, dtype: Any = None) -> pl.DataFrame:
    return frame.with_columns(pl.lit(value, dtype).alias(column))


POSITIONS = [
    pytest.param(lambda: pos.from_fills(FILLS.drop("price")), "price", id="fills-lack-price"),
    pytest.param(lambda: pos.from_fills(_with(FILLS, "price", "cheap")), "price",
                 id="fills-price-not-a-number"),
    pytest.param(lambda: pos.from_fills(_with(FILLS, "fee", "n/a")), "fee",
                 id="fills-fee-not-a-number"),
    pytest.param(lambda: pos.from_fills(_with(FILLS, "side", 1)), "side", id="fills-side-an-int"),
    pytest.param(lambda: pos.from_fills(_with(FILLS, "side", None, pl.String)), "side",
                 id="fills-side-null"),
    pytest.param(lambda: pos.from_fills(_with(FILLS, "size", None, pl.Float64)), "size",
                 id="fills-size-null"),
    pytest.param(lambda: pos.from_fills(_with(FILLS, "timestamp", "yesterday")), "timestamp",
                 id="fills-timestamp-not-a-time"),
    pytest.param(lambda: pos.from_fills(FILLS.to_dict(as_series=False)), "fills",  # type: ignore[arg-type]
                 id="fills-not-a-frame"),
    pytest.param(lambda: pos.from_fills(FILLS, marks=MARKS.drop("mid")), "marks",
                 id="marks-lack-a-price"),
    pytest.param(lambda: pos.from_fills(FILLS, marks=_with(MARKS, "mid", "x")), "mid",
                 id="marks-price-not-a-number"),
    pytest.param(lambda: pos.mark_to_market(_derived().drop("fees"), MARKS), "fees",
                 id="mtm-positions-lack-fees"),
    pytest.param(lambda: pos.mark_to_market(_derived(), MARKS.drop("market")), "market",
                 id="mtm-marks-lack-market"),
    pytest.param(lambda: pos.mark_to_market(_with(_derived(), "size", "x"), MARKS), "size",
                 id="mtm-size-not-a-number"),
    pytest.param(lambda: pos.mark_to_market(_derived(), _with(MARKS, "market", 1)), "market",
                 id="mtm-marks-market-an-int"),
    pytest.param(lambda: pos.reconcile(SNAPSHOTS.drop("size"), _derived()), "size",
                 id="reconcile-snapshots-lack-size"),
    pytest.param(lambda: pos.reconcile(SNAPSHOTS, _derived(), fields=("fees",)), "fields",
                 id="reconcile-unknown-field"),
    pytest.param(lambda: pos.reconcile(SNAPSHOTS, _derived(), tolerance="tiny"),  # type: ignore[arg-type]
                 "tolerance", id="reconcile-tolerance-not-a-number"),
    pytest.param(lambda: pos.reconcile(_with(SNAPSHOTS, "size", "x"), _derived()), "size",
                 id="reconcile-size-not-a-number"),
    pytest.param(lambda: pos.reconcile([], _derived()), "snapshots",  # type: ignore[arg-type]
                 id="reconcile-not-a-frame"),
]


@pytest.mark.parametrize(("call", "column"), POSITIONS)
def test_positions_refuse_malformed_frames_with_a_validation_error(
    call: Callable[[], Any], column: str
) -> None:
    result, err = outcome(call)
    found = problem(err, (column,), cls=agts.ValidationError)
    assert found is None, found + (f" (returned {_short(result)})" if err is None else "")


def _naive(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("timestamp").dt.replace_time_zone(None))


def test_positions_take_naive_timestamps_as_utc() -> None:
    """As everywhere in agts, a naive timestamp *is* UTC (never the machine's zone): a frame
    without a zone gives the same answer as the same frame labelled UTC."""
    from polars.testing import assert_frame_equal

    assert_frame_equal(pos.from_fills(FILLS, marks=_naive(MARKS)), pos.from_fills(FILLS, marks=MARKS))
    assert_frame_equal(pos.from_fills(_naive(FILLS)), _derived())
    assert_frame_equal(pos.reconcile(_naive(SNAPSHOTS), _derived()),
                       pos.reconcile(SNAPSHOTS, _derived()))
    shifted = MARKS.with_columns(pl.col("timestamp").dt.convert_time_zone("Asia/Tokyo"))
    assert_frame_equal(pos.from_fills(FILLS, marks=shifted), pos.from_fills(FILLS, marks=MARKS))
