"""Least-privilege roles: reader (notebooks), writer (ingest services) and admin (migrations).

Roles are cluster-wide in PostgreSQL, so they are not created by a migration (a migration runs once
per database); :func:`create_roles` is idempotent and run by an administrator, from Python or with
``agts roles create``. The three roles are group roles without login; give them to login roles
with :func:`grant_role` (or ``GRANT agts_reader TO alice``).

- ``<prefix>_reader``: ``SELECT`` on every table and view in the ``agts`` schema, now and later.
- ``<prefix>_writer``: the reader's rights plus ``INSERT``/``UPDATE``/``DELETE`` on the ``agts``
  tables and use of their sequences, and ``TEMPORARY`` on the database (bulk ingest stages rows in
  temporary tables). No ``DROP``, ``TRUNCATE`` or DDL.
- ``<prefix>_admin``: owns nothing by default but may create in the schema; migrations run as the
  database owner or a superuser.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from agts.errors import ValidationError

__all__ = ["RoleNames", "create_roles", "grant_role"]

log = logging.getLogger(__name__)

_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


@dataclass(frozen=True)
class RoleNames:
    """The names of the three group roles."""

    reader: str
    writer: str
    admin: str


def _names(prefix: str) -> RoleNames:
    if not _PREFIX.match(prefix):
        raise ValidationError(
            f"role prefix must be lower-case letters, digits and underscores, got {prefix!r}"
        )
    return RoleNames(f"{prefix}_reader", f"{prefix}_writer", f"{prefix}_admin")


def create_roles(engine: Any, *, prefix: str = "agts") -> RoleNames:
    """Create (if missing) the reader, writer and admin roles and grant them on this database.

    Idempotent: run it again after migrations that add tables (default privileges also cover
    tables created later by the same migrating role).

    Parameters
    ----------
    engine
        A :class:`agts.StorageEngine` connected as a superuser or a role with CREATEROLE that owns
        the ``agts`` schema.
    prefix
        Role names are ``<prefix>_reader``, ``<prefix>_writer``, ``<prefix>_admin``.
    """
    names = _names(prefix)
    reader, writer, admin = (sql.Identifier(n) for n in (names.reader, names.writer, names.admin))
    database = sql.Identifier(engine.server.database)
    statements = [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}, {}").format(database, reader, writer, admin),
        sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}, {}").format(database, writer, admin),
        sql.SQL("GRANT USAGE ON SCHEMA agts TO {}, {}, {}").format(reader, writer, admin),
        sql.SQL("GRANT CREATE ON SCHEMA agts TO {}").format(admin),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA agts TO {}, {}").format(reader, writer),
        sql.SQL("GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA agts TO {}").format(writer),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA agts TO {}").format(writer),
        sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA agts TO {}, {}").format(reader, writer),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA agts GRANT SELECT ON TABLES TO {}, {}").format(
            reader, writer),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA agts GRANT INSERT, UPDATE, DELETE ON TABLES "
                "TO {}").format(writer),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA agts GRANT USAGE, SELECT ON SEQUENCES "
                "TO {}").format(writer),
    ]
    action = f"create roles {names.reader}, {names.writer}, {names.admin}"
    with engine.db.connection(action) as conn:
        for name in (names.reader, names.writer, names.admin):
            conn.execute(
                sql.SQL(
                    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {}) "
                    "THEN CREATE ROLE {} NOLOGIN; END IF; END $$"
                ).format(sql.Literal(name), sql.Identifier(name))
            )
        for statement in statements:
            conn.execute(statement)
    log.info("roles %s, %s, %s ready on %s", names.reader, names.writer, names.admin,
             engine.server.database)
    return names


def grant_role(engine: Any, role: str, *, to: str) -> None:
    """``GRANT role TO login_role`` (both must exist)."""
    with engine.db.connection(f"grant {role!r} to {to!r}") as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(to)))
