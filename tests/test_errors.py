"""Driver errors become typed agts errors, by SQLSTATE, with the original kept as __cause__."""

from __future__ import annotations

import psycopg
import pytest

import agts
from agts.errors import translate


def _raise_from_server(engine: agts.StorageEngine, statement: str) -> psycopg.Error:
    with engine.db.connection() as conn:
        conn.execute("CREATE TEMP TABLE t (id int CONSTRAINT t_pk PRIMARY KEY, v int CHECK (v > 0))")
        conn.execute("INSERT INTO t VALUES (1, 1)")
        try:
            conn.execute("SET LOCAL statement_timeout = '50ms'")
            conn.execute(statement)
        except psycopg.Error as exc:
            conn.rollback()
            return exc
    raise AssertionError(f"{statement!r} did not fail")


@pytest.mark.parametrize(
    ("statement", "error", "transient", "fragment"),
    [
        pytest.param("INSERT INTO t VALUES (1, 2)", agts.ConstraintError, False,
                     'duplicate key value violates unique constraint "t_pk"', id="unique"),
        pytest.param("INSERT INTO t VALUES (2, -1)", agts.ConstraintError, False,
                     "violates check constraint", id="check"),
        pytest.param("SELEC 1", agts.QueryError, False, "syntax error", id="syntax"),
        pytest.param("SELECT 1/0", agts.QueryError, False, "division by zero", id="data"),
        pytest.param("SELECT pg_sleep(2)", agts.QueryError, True, "statement timeout", id="timeout"),
    ],
)
def test_translate_by_sqlstate(engine: agts.StorageEngine, statement: str, error: type,
                               transient: bool, fragment: str) -> None:
    exc = _raise_from_server(engine, statement)
    translated = translate(exc, action="run the test")
    assert type(translated) is error
    assert translated.transient is transient
    assert translated.sqlstate == exc.sqlstate
    assert str(translated).startswith("run the test failed: ")
    assert fragment in str(translated)


def test_constraint_name_is_reported(engine: agts.StorageEngine) -> None:
    translated = translate(_raise_from_server(engine, "INSERT INTO t VALUES (1, 5)"), action="x")
    assert isinstance(translated, agts.ConstraintError)
    assert translated.constraint == "t_pk"


def test_connection_failures_without_sqlstate_are_transient() -> None:
    exc = psycopg.OperationalError("connection refused: password=hunter2")
    translated = translate(exc, action="connect")
    assert isinstance(translated, agts.ConnectError)
    assert translated.transient is True
    assert "hunter2" not in str(translated)


def test_storage_errors_pass_through() -> None:
    original = agts.ValidationError("bad", column="value", row=3)
    assert translate(original, action="x") is original
    assert (original.column, original.row) == ("value", 3)


def test_adbc_errors_say_why_not_only_which_statement(engine: agts.StorageEngine) -> None:
    """ADBC's message starts with the statement it ran; the server's reason is further down."""
    with pytest.raises(agts.QueryError) as caught:
        engine.db.fetch_arrow("\nSELECT 1 / (0 * $1::int)\n", [3], action="run the test")
    assert "division by zero" in str(caught.value)
    assert str(caught.value).startswith("run the test failed: ")
    assert caught.value.sqlstate == "22012"


def test_a_terminated_session_is_a_transient_connect_error(engine: agts.StorageEngine) -> None:
    with engine.db.connection() as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        with engine.db.connection() as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as exc:
            translated = translate(exc, action="run the test")
        else:
            raise AssertionError("the terminated session still answered")
    assert isinstance(translated, agts.ConnectError) and translated.transient
    with engine.db.connection() as conn:  # the pool replaced the dead connection
        assert conn.execute("SELECT 1").fetchone() == (1,)
