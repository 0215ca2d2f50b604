from __future__ import annotations

import re
import threading
from pathlib import Path

import psycopg
import pytest

import agts
from agts._migrations import MigrationRunner, default_directory
from agts.db import conninfo


def _schema_snapshot(config: agts.StorageConfig) -> list[tuple]:
    """Every column, index, constraint, view and hypertable in the agts schema."""
    with psycopg.connect(conninfo(config.database)) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'agts' ORDER BY 1, 2"
        ).fetchall()
        idx = conn.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'agts' ORDER BY 1, 2"
        ).fetchall()
        cons = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'agts'::regnamespace ORDER BY 1, 2"
        ).fetchall()
        views = conn.execute(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = 'agts' ORDER BY 1"
        ).fetchall()
        hyper = conn.execute(
            "SELECT hypertable_name, num_dimensions FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'agts' ORDER BY 1"
        ).fetchall()
    # A continuous aggregate's view names its materialization hypertable by a serial id, which a
    # re-creation changes: compare the definitions without it.
    views = [(name, re.sub(r"_materialized_hypertable_\d+", "_materialized_hypertable_N", text))
             for name, text in views]
    return [("col", *c) for c in cols] + [("idx", *i) for i in idx] + [
        ("con", *c) for c in cons] + [("view", *v) for v in views] + [("ht", *h) for h in hyper]


def test_up_down_up_round_trip_leaves_identical_schema(blank_config: agts.StorageConfig) -> None:
    with agts.connect(blank_config) as engine:
        runner = MigrationRunner(engine.db)
        applied = runner.up()
        assert [s.version for s in applied] == [m.version for m in runner.migrations]
        assert runner.current_version() == runner.latest
        first = _schema_snapshot(blank_config)
        assert runner.up() == []  # idempotent

        rolled = runner.down(0)
        assert [s.version for s in rolled] == sorted((m.version for m in runner.migrations),
                                                     reverse=True)
        assert runner.current_version() == 0
        assert [r for r in _schema_snapshot(blank_config) if "schema_migrations" not in r[1]] == []

        runner.up()
        assert _schema_snapshot(blank_config) == first


def test_down_without_target_goes_one_step_back(blank_config: agts.StorageConfig) -> None:
    with agts.connect(blank_config) as engine:
        runner = MigrationRunner(engine.db)
        runner.up()
        if runner.latest < 2:
            pytest.skip("needs at least two migrations")
        steps = runner.down()
        assert [s.version for s in steps] == [runner.latest]
        assert runner.current_version() == runner.migrations[-2].version


def _copy_migrations(tmp_path: Path) -> Path:
    target = tmp_path / "migrations"
    target.mkdir()
    for f in default_directory().glob("*.sql"):
        (target / f.name).write_text(f.read_text())
    return target


def test_edited_applied_migration_is_refused(blank_config: agts.StorageConfig,
                                             tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    with agts.connect(blank_config) as engine:
        MigrationRunner(engine.db, directory=directory).up()
        up = directory / "0001_foundation.up.sql"
        up.write_text(up.read_text() + "\n-- tampered\n")
        with pytest.raises(agts.MigrationError,
                           match=r"migration 0001_foundation was edited after it was applied"):
            MigrationRunner(engine.db, directory=directory).up()
        with pytest.raises(agts.MigrationError, match="edited after it was applied"):
            engine.migrate(directory=directory)


def test_failing_migration_is_rolled_back_whole(blank_config: agts.StorageConfig,
                                                tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    (directory / "0900_broken.up.sql").write_text(
        "CREATE TABLE agts.half_done (x int);\nSELECT no_such_function();\n")
    (directory / "0900_broken.down.sql").write_text("DROP TABLE agts.half_done;\n")
    with agts.connect(blank_config) as engine:
        runner = MigrationRunner(engine.db, directory=directory)
        with pytest.raises(agts.MigrationError,
                           match=r"migration 0900_broken failed and was rolled back: .*no_such_function"):
            runner.up()
        assert runner.current_version() == runner.migrations[-2].version
        with engine.db.connection() as conn:
            assert conn.execute("SELECT to_regclass('agts.half_done')").fetchone() == (None,)


def test_community_parts_are_skipped_with_a_note_on_apache(blank_config: agts.StorageConfig,
                                                           tmp_path: Path) -> None:
    directory = _copy_migrations(tmp_path)
    (directory / "0900_extra.up.sql").write_text("CREATE TABLE agts.extra (t timestamptz NOT NULL);")
    (directory / "0900_extra.down.sql").write_text("DROP TABLE agts.extra;")
    (directory / "0900_extra.community.up.sql").write_text(
        "SELECT create_hypertable('agts.extra', 't');\n"
        "ALTER TABLE agts.extra SET (timescaledb.compress);")
    (directory / "0900_extra.community.down.sql").write_text(
        "ALTER TABLE agts.extra SET (timescaledb.compress = false);")
    with agts.connect(blank_config) as engine:
        runner = MigrationRunner(engine.db, directory=directory)
        steps = runner.up()
        extra = next(s for s in steps if s.version == 900)
        state = next(s for s in runner.status() if s.version == 900)
        if engine.server.community:
            assert extra.skipped == []
            assert state.community is True
        else:
            assert len(extra.skipped) == 1
            assert "0900_extra.community.up.sql" in extra.skipped[0]
            assert "Community edition" in extra.skipped[0]
            assert state.community is False
        runner.down(runner.migrations[-2].version)
        with engine.db.connection() as conn:
            assert conn.execute("SELECT to_regclass('agts.extra')").fetchone() == (None,)


def test_concurrent_runners_apply_each_migration_once(blank_config: agts.StorageConfig) -> None:
    results: list[list] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with agts.connect(blank_config) as engine:
                results.append(engine.migrate())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(step.version for steps in results for step in steps)
    with agts.connect(blank_config) as engine:
        runner = MigrationRunner(engine.db)
        assert applied == [m.version for m in runner.migrations]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param({"0001_a.up.sql": "SELECT 1"}, "has no .down.sql file", id="missing-down"),
        pytest.param({"1_a.up.sql": "SELECT 1"}, "unexpected file '1_a.up.sql'", id="bad-name"),
        pytest.param({"0001_a.up.sql": "", "0001_a.down.sql": "", "0001_a.community.up.sql": ""},
                     "needs both .community.up.sql and .community.down.sql", id="half-community"),
    ],
)
def test_malformed_migration_directories_are_rejected(
    engine: agts.StorageEngine, tmp_path: Path, files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(agts.MigrationError, match=message.replace(".", r"\.").replace("(", r"\(")):
        MigrationRunner(engine.db, directory=tmp_path)


def test_unknown_target_version_lists_known_ones(engine: agts.StorageEngine) -> None:
    with pytest.raises(agts.MigrationError, match=r"unknown migration version 4242; known versions: 0, 1"):
        engine.migrate(4242)


def test_ledger_xid_migration_keeps_unseen_batches_candidates(
        blank_config: agts.StorageConfig) -> None:
    # 0007 gives old ledger rows a transaction id: below the rollups' xmin when every rollup
    # certainly saw them under the old rule (begun > 10 min before the oldest refresh), else above.
    with agts.connect(blank_config) as engine:
        engine.migrate(6)
        with engine.db.connection() as conn:
            conn.execute("UPDATE agts.rollup_state SET refreshed_at = now() - interval '1 hour'")
            conn.execute(
                "INSERT INTO agts.ingest_batches (batch_id, rows, ingested_at) VALUES "
                "('00000000-0000-0000-0000-00000000000a', 1, now() - interval '3 hours'), "
                "('00000000-0000-0000-0000-00000000000b', 1, now() - interval '65 minutes'), "
                "('00000000-0000-0000-0000-00000000000c', 1, now())")
            conn.commit()
        engine.migrate()
        with engine.db.connection() as conn:
            rows = conn.execute(
                "SELECT right(b.batch_id::text, 1), b.xid >= s.seen_xmin FROM agts.ingest_batches b "
                "CROSS JOIN agts.rollup_state s WHERE s.rollup = 'rollup_1h' ORDER BY 1").fetchall()
    assert rows == [("a", False), ("b", True), ("c", True)]
