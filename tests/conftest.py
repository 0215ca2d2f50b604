"""Test fixtures: a real TimescaleDB and an isolated database for every test.

The server is ``$AGTS_TEST_DSN`` (a superuser DSN of any TimescaleDB server, e.g. the docker-compose
service) or else the local default cluster, started on demand. A migrated template database is
built once per session; each test gets ``CREATE DATABASE ... TEMPLATE`` of it and drops it after.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.db import conninfo

TEMPLATE = f"agts_test_template_{os.getpid()}"


def _base_config() -> StorageConfig:
    dsn = os.environ.get("AGTS_TEST_DSN")
    if dsn:
        return StorageConfig.from_dsn(dsn)
    from agts.db import _local

    if not _local.status().running:
        _local.start()
    return StorageConfig.load(env={})


def _admin(config: StorageConfig) -> psycopg.Connection:
    cfg = config.with_overrides(database={"database": "postgres"})
    return psycopg.connect(conninfo(cfg.database), autocommit=True)


def _for_database(config: StorageConfig, name: str) -> StorageConfig:
    return config.with_overrides(database={"database": name})


@pytest.fixture(scope="session")
def base_config() -> StorageConfig:
    return _base_config()


@pytest.fixture(scope="session")
def template_database(base_config: StorageConfig) -> Iterator[str]:
    with _admin(base_config) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    with agts.connect(_for_database(base_config, TEMPLATE)) as engine:
        engine.migrate()
        with engine.db.connection() as conn:
            # TimescaleDB's scheduler keeps a session in every database that has the extension,
            # and CREATE DATABASE ... TEMPLATE refuses a template with sessions: stop it here.
            conn.execute("SELECT timescaledb_pre_restore()")
    with _admin(base_config) as conn:
        # ...and keep every other session out, TimescaleDB's launcher included: CREATE DATABASE
        # waits 5 s for a template's sessions to leave before it fails.
        conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(
            sql.Identifier(TEMPLATE)))
    yield TEMPLATE
    with _admin(base_config) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(TEMPLATE)))


def _new_database(base_config: StorageConfig, template: str | None) -> str:
    name = f"agts_test_{uuid.uuid4().hex[:12]}"
    with _admin(base_config) as conn:
        if template:
            for attempt in range(50):
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(name), sql.Identifier(template)))
                    break
                except psycopg.errors.ObjectInUse:
                    if attempt == 49:
                        raise
                    time.sleep(0.1)
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def _drop_database(base_config: StorageConfig, name: str) -> None:
    with _admin(base_config) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def config(base_config: StorageConfig, template_database: str) -> Iterator[StorageConfig]:
    """Settings for a fresh, fully migrated database of this test's own."""
    name = _new_database(base_config, template_database)
    try:
        yield _for_database(base_config, name)
    finally:
        _drop_database(base_config, name)


@pytest.fixture
def blank_config(base_config: StorageConfig) -> Iterator[StorageConfig]:
    """Settings for a fresh database with no migrations applied."""
    name = _new_database(base_config, None)
    try:
        yield _for_database(base_config, name)
    finally:
        _drop_database(base_config, name)


@pytest.fixture
def engine(config: StorageConfig) -> Iterator[agts.StorageEngine]:
    """A connected engine on this test's own migrated database."""
    with agts.connect(config) as eng:
        yield eng


def _community_base() -> StorageConfig | None:
    dsn = os.environ.get("AGTS_TEST_COMMUNITY_DSN")
    return StorageConfig.from_dsn(dsn) if dsn else None


@pytest.fixture
def community(request: pytest.FixtureRequest, base_config: StorageConfig) -> Iterator[agts.StorageEngine]:
    """An engine on a fresh migrated database of a Community-edition server; skips otherwise.

    The server is ``$AGTS_TEST_COMMUNITY_DSN`` when set (a superuser DSN), else the main test server
    if it runs the Community edition.
    """
    server = _community_base() or base_config
    name = _new_database(server, None)
    try:
        with agts.connect(_for_database(server, name)) as eng:
            # The edition is known once the extension exists in the database: migrate first.
            eng.migrate()
            if not eng.server.community:
                pytest.skip(
                    "needs the TimescaleDB Community edition; the test server runs the "
                    f"{eng.server.edition} edition (set AGTS_TEST_COMMUNITY_DSN to a Community "
                    "server, e.g. the docker-compose service)"
                )
            yield eng
    finally:
        _drop_database(server, name)


@pytest.fixture(params=["apache", "community"])
def any_edition(request: pytest.FixtureRequest) -> agts.StorageEngine:
    """The test runs once per edition: on ``engine`` (Apache) and on ``community``; each skips
    with the reason where that edition is not available."""
    if request.param == "community":
        return request.getfixturevalue("community")
    eng: agts.StorageEngine = request.getfixturevalue("engine")
    if eng.server.community:
        pytest.skip("the main test server runs the Community edition; the Apache path needs a server "
                    "with timescaledb.license = 'apache' (the local default cluster)")
    return eng


@pytest.fixture
def arch(config: StorageConfig, tmp_path: Path) -> Iterator[agts.StorageEngine]:
    """An engine on the test's database whose archive root is the test's own folder."""
    cfg = config.with_overrides(archive={"root": str(tmp_path / "archive")})
    with agts.connect(cfg) as eng:
        yield eng
