"""Versioned schema migrations: ``sql/migrations/NNNN_name.up.sql`` and ``.down.sql``.

A version may also have ``NNNN_name.community.up.sql`` / ``.community.down.sql``: statements that
only the TimescaleDB Community edition supports (columnstore, continuous aggregates, policies).
They run after the plain file on that edition and are skipped, with a note, on the Apache edition.

Each step runs in its own transaction together with its row in ``agts.schema_migrations``, so a
step is applied whole or not at all. A session advisory lock serializes concurrent runners. The
history keeps a SHA-256 of each version's files; an applied migration whose files changed is
refused rather than silently diverging.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg

from agts.db._database import Database
from agts.errors import MigrationError, translate

__all__ = ["Migration", "MigrationRunner", "MigrationState", "MigrationStep", "default_directory"]

log = logging.getLogger(__name__)

#: Key of the advisory lock every runner takes (the bytes of "agtsmigr" as a bigint).
LOCK_KEY = int.from_bytes(b"agtsmigr", "big") & 0x7FFFFFFFFFFFFFFF

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(community\.)?(up|down)\.sql$")

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS agts;
CREATE TABLE IF NOT EXISTS agts.schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    community   boolean NOT NULL DEFAULT false,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms double precision NOT NULL
);
"""


def default_directory() -> Path:
    """The migrations shipped with agts (``sql/migrations`` in a checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_sql" / "migrations", here.parent / "sql" / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError("the sql/migrations directory is missing from this agts installation")


@dataclass(frozen=True)
class Migration:
    """One version's files."""

    version: int
    name: str
    up: str
    down: str
    community_up: str | None = None
    community_down: str | None = None

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        digest = hashlib.sha256()
        for part in (self.up, self.down, self.community_up or "", self.community_down or ""):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()


@dataclass(frozen=True)
class MigrationState:
    """A row of ``agts migrate status``."""

    version: int
    name: str
    applied: bool
    applied_at: datetime | None
    community: bool
    checksum_ok: bool | None


@dataclass(frozen=True)
class MigrationStep:
    """A step that :meth:`agts.StorageEngine.migrate` applied (or a rollback undid).

    Attributes
    ----------
    version : int
        The migration's number (``sql/migrations/NNNN_name.*.sql``).
    name : str
        Its name.
    direction : {"up", "down"}
        Applied or rolled back.
    duration_ms : float
        How long the step's transaction took.
    skipped : list of str
        Edition-specific parts left out, with the reason (Community-only statements on the
        Apache edition).
    """

    version: int
    name: str
    direction: Literal["up", "down"]
    duration_ms: float
    skipped: list[str] = field(default_factory=list)


def load_migrations(directory: Path) -> list[Migration]:
    """Read and check a migrations directory: every version needs an up and a down file."""
    parts: dict[int, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(
                f"unexpected file {path.name!r} in {directory}: migrations are named "
                "NNNN_name.up.sql / NNNN_name.down.sql (optionally .community.up.sql)"
            )
        version = int(match.group(1))
        entry = parts.setdefault(version, {"name": match.group(2)})
        if entry["name"] != match.group(2):
            raise MigrationError(
                f"version {version:04d} has two names: {entry['name']!r} and {match.group(2)!r}"
            )
        key = ("community_" if match.group(3) else "") + match.group(4)
        entry[key] = path.read_text()
    migrations = []
    for version, entry in sorted(parts.items()):
        for needed in ("up", "down"):
            if needed not in entry:
                raise MigrationError(
                    f"migration {version:04d}_{entry['name']} has no .{needed}.sql file"
                )
        if ("community_up" in entry) != ("community_down" in entry):
            raise MigrationError(
                f"migration {version:04d}_{entry['name']} needs both .community.up.sql and "
                ".community.down.sql, or neither"
            )
        migrations.append(Migration(version=version, **entry))
    return migrations


class MigrationRunner:
    """Apply and roll back migrations on one database.

    Parameters
    ----------
    db
        The engine's connections.
    directory
        Where the migration files are (default: the ones shipped with agts).
    lock_timeout_sec
        How long to wait for another runner's advisory lock before failing.
    """

    def __init__(
        self, db: Database, *, directory: Path | None = None, lock_timeout_sec: float = 60.0
    ) -> None:
        self._db = db
        self._directory = directory or default_directory()
        self._lock_timeout_ms = int(lock_timeout_sec * 1000)
        self.migrations = load_migrations(self._directory)

    @property
    def latest(self) -> int:
        """The highest version available."""
        return self.migrations[-1].version if self.migrations else 0

    def status(self) -> list[MigrationState]:
        """Every known version, applied or not, with its checksum verdict. Reads only (also as a
        role that may not create anything)."""
        with self._db.connection("read the migration status") as conn:
            history = self._history(conn)
        states = []
        for m in self.migrations:
            row = history.get(m.version)
            states.append(MigrationState(
                version=m.version, name=m.name, applied=row is not None,
                applied_at=row["applied_at"] if row else None,
                community=bool(row and row["community"]),
                checksum_ok=(row["checksum"] == m.checksum) if row else None,
            ))
        return states

    def current_version(self) -> int:
        """The highest applied version (0 when none)."""
        applied = [s.version for s in self.status() if s.applied]
        return max(applied, default=0)

    def up(self, target: int | None = None) -> list[MigrationStep]:
        """Apply pending migrations up to ``target`` (default: the latest). Idempotent.

        A database already at ``target`` is only read (checksums included): no lock is taken,
        so a session holding the migration lock (any role can take an advisory lock) cannot
        stall services that migrate at start-up.
        """
        target = self.latest if target is None else target
        self._check_target(target)
        with self._db.connection("read the migration status") as conn:
            if self._history(conn) and not self._pending(self._verify(conn), target):
                return []
        steps: list[MigrationStep] = []
        with self._locked() as conn:
            history = self._verify(conn)
            for m in self.migrations:
                if m.version > target or m.version in history:
                    continue
                steps.append(self._apply(conn, m))
        return steps

    def down(self, target: int | None = None) -> list[MigrationStep]:
        """Roll back to ``target`` (default: one step back from the current version)."""
        steps: list[MigrationStep] = []
        with self._locked() as conn:
            history = self._verify(conn)
            applied = sorted(history, reverse=True)
            if target is None:
                target = applied[1] if len(applied) > 1 else 0
            self._check_target(target)
            by_version = {m.version: m for m in self.migrations}
            for version in applied:
                if version <= target:
                    break
                steps.append(self._revert(conn, by_version[version], history[version]))
        return steps

    # -- internals ---------------------------------------------------------------------------

    def _check_target(self, target: int) -> None:
        known = {0} | {m.version for m in self.migrations}
        if target not in known:
            raise MigrationError(
                f"unknown migration version {target!r}; known versions: "
                f"{', '.join(str(v) for v in sorted(known))}"
            )

    def _locked(self) -> Any:
        runner = self

        class _Lock:
            def __enter__(self) -> psycopg.Connection[Any]:
                self._cm = runner._db.connection()
                conn = self._cm.__enter__()
                conn.autocommit = True
                try:
                    conn.execute(f"SET lock_timeout = {runner._lock_timeout_ms}")
                    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
                except psycopg.errors.LockNotAvailable as exc:
                    conn.execute("RESET lock_timeout")
                    self._cm.__exit__(None, None, None)
                    raise MigrationError(
                        "another process holds the migration lock; waited "
                        f"{runner._lock_timeout_ms / 1000:g}s", transient=True,
                    ) from exc
                conn.execute("RESET lock_timeout")
                conn.execute(_BOOTSTRAP)
                self._conn = conn
                return conn

            def __exit__(self, *exc: object) -> None:
                try:
                    if not self._conn.closed:
                        self._conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
                        self._conn.autocommit = False
                finally:
                    self._cm.__exit__(*exc)  # type: ignore[arg-type]

        return _Lock()

    def _pending(self, history: dict[int, Any], target: int) -> bool:
        return any(m.version <= target and m.version not in history for m in self.migrations)

    def _history(self, conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
        """The applied migrations (none when ``agts.schema_migrations`` does not exist yet)."""
        from psycopg.rows import dict_row

        row = conn.execute("SELECT to_regclass('agts.schema_migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return {}
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT version, name, checksum, community, applied_at "
                        "FROM agts.schema_migrations")
            return {row["version"]: row for row in cur.fetchall()}

    def _verify(self, conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
        history = self._history(conn)
        by_version = {m.version: m for m in self.migrations}
        for version, row in sorted(history.items()):
            m = by_version.get(version)
            if m is None:
                raise MigrationError(
                    f"the database has migration {version:04d}_{row['name']} applied, which this "
                    f"agts does not know (newest known: {self.latest:04d}); upgrade agts"
                )
            if row["checksum"] != m.checksum:
                raise MigrationError(
                    f"migration {m.label} was edited after it was applied (checksum in database "
                    f"{row['checksum'][:12]}…, on disk {m.checksum[:12]}…); restore the original "
                    "file and put the change in a new migration"
                )
        return history

    def _apply(self, conn: psycopg.Connection[Any], m: Migration) -> MigrationStep:
        community = self._db.server.community
        skipped = []
        started = time.perf_counter()
        try:
            with conn.transaction():
                conn.execute(m.up)
                if m.community_up is not None:
                    if community:
                        conn.execute(m.community_up)
                    else:
                        skipped.append(
                            f"{m.label}.community.up.sql (needs the Community edition; "
                            f"server runs {self._db.server.edition})"
                        )
                duration = (time.perf_counter() - started) * 1000
                conn.execute(
                    "INSERT INTO agts.schema_migrations (version, name, checksum, community, "
                    "duration_ms) VALUES (%s, %s, %s, %s, %s)",
                    (m.version, m.name, m.checksum, community and m.community_up is not None,
                     duration),
                )
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {m.label} failed and was rolled back: "
                f"{translate(exc, action='apply').args[0].removeprefix('apply failed: ')}",
                sqlstate=getattr(exc, "sqlstate", None),
            ) from exc
        for note in skipped:
            log.info("migration %s: skipped %s", m.label, note)
        log.info("applied migration %s in %.0f ms", m.label, duration)
        if m.version == 1 or "timescaledb" in m.up.lower():
            self._db.refresh_server_info()
        return MigrationStep(m.version, m.name, "up", duration, skipped)

    def _revert(
        self, conn: psycopg.Connection[Any], m: Migration, row: dict[str, Any]
    ) -> MigrationStep:
        started = time.perf_counter()
        try:
            with conn.transaction():
                if row["community"] and m.community_down is not None:
                    conn.execute(m.community_down)
                conn.execute(m.down)
                conn.execute("DELETE FROM agts.schema_migrations WHERE version = %s", (m.version,))
        except psycopg.Error as exc:
            raise MigrationError(
                f"rolling back migration {m.label} failed and was undone: "
                f"{translate(exc, action='roll back').args[0].removeprefix('roll back failed: ')}",
                sqlstate=getattr(exc, "sqlstate", None),
            ) from exc
        duration = (time.perf_counter() - started) * 1000
        log.info("rolled back migration %s in %.0f ms", m.label, duration)
        return MigrationStep(m.version, m.name, "down", duration)
