"""Least privilege: a reader can read and nothing else; a writer can write but not drop."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import agts
from agts import create_roles, grant_role
from agts.db import conninfo


@pytest.fixture
def logins(engine: agts.StorageEngine, config: agts.StorageConfig) -> Iterator[dict[str, agts.StorageConfig]]:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    names = create_roles(engine, prefix=prefix)
    created = [names.reader, names.writer, names.admin]
    out = {}
    with engine.db.connection() as conn:
        for kind, _group in (("reader", names.reader), ("writer", names.writer)):
            login = f"{prefix}_{kind}_login"
            password = secrets.token_hex(8)
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(login), sql.Literal(password)))
            created.append(login)
            out[kind] = config.with_overrides(database={"user": login, "password": password})
    grant_role(engine, names.reader, to=f"{prefix}_reader_login")
    grant_role(engine, names.writer, to=f"{prefix}_writer_login")
    out["_names"] = names  # type: ignore[assignment]
    try:
        yield out
    finally:
        with engine.db.connection() as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY(%s)",
                         (created,))
            for role in created:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with engine.db.connection() as conn:
            for role in created:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _run(cfg: agts.StorageConfig, statement: str) -> None:
    """A statement in a session of the login (plain psycopg: the server's own refusal)."""
    with psycopg.connect(conninfo(cfg.database)) as conn:
        conn.execute(statement)


def test_reader_reads_but_cannot_write_or_drop(logins: dict) -> None:
    reader = logins["reader"]
    with agts.connect(reader) as eng, eng.db.connection() as conn:
        rows = conn.execute("SELECT version FROM agts.schema_migrations").fetchall()
        assert (1,) in rows
    for statement in ("INSERT INTO agts.schema_migrations VALUES (999, 'x', 'x', false, now(), 0)",
                      "DELETE FROM agts.schema_migrations",
                      "DROP TABLE agts.schema_migrations",
                      "CREATE TABLE agts.sneaky (x int)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _run(reader, statement)


def test_writer_writes_but_cannot_drop_or_create(logins: dict) -> None:
    writer = logins["writer"]
    _run(writer, "INSERT INTO agts.schema_migrations VALUES (999, 'x', 'x', false, now(), 0)")
    _run(writer, "DELETE FROM agts.schema_migrations WHERE version = 999")
    _run(writer, "CREATE TEMP TABLE staging (x int)")
    for statement in ("DROP TABLE agts.schema_migrations", "TRUNCATE agts.schema_migrations",
                      "CREATE TABLE agts.sneaky (x int)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            _run(writer, statement)


def test_create_roles_is_idempotent_and_checks_prefix(engine: agts.StorageEngine, logins: dict) -> None:
    names = logins["_names"]
    prefix = names.reader.removesuffix("_reader")
    assert create_roles(engine, prefix=prefix) == names
    with pytest.raises(agts.ValidationError, match="role prefix must be lower-case letters"):
        create_roles(engine, prefix="Bad-Prefix; DROP")


def test_cli_roles_create(config: agts.StorageConfig, engine: agts.StorageEngine) -> None:
    from tests.test_cli import run_cli

    prefix = f"c{uuid.uuid4().hex[:8]}"
    result = run_cli("roles", "create", "--prefix", prefix, "--json", config=config)
    try:
        assert result.returncode == 0, result.stderr
        assert f'"reader": "{prefix}_reader"' in result.stdout
        bad = run_cli("roles", "create", "--grant", "reader", config=config)
        assert bad.returncode == 2
    finally:
        with engine.db.connection() as conn:
            for kind in ("reader", "writer", "admin"):
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(f"{prefix}_{kind}")))
        with engine.db.connection() as conn:
            for kind in ("reader", "writer", "admin"):
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(f"{prefix}_{kind}")))
