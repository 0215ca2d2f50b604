"""Databases of their own for examples, notebooks, demos and trials: created on the configured
server, and (temporary ones) dropped at the end, so nothing in a user's databases is touched.

Both need a login that may ``CREATE DATABASE`` (the local default cluster's superuser may); the
maintenance connection goes to the server's ``postgres`` database (``template1`` if that one is
not reachable).
"""

from __future__ import annotations

import logging
import re
import secrets
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from agts.config import StorageConfig
from agts.db._conninfo import conninfo
from agts.errors import ConfigError, ValidationError, translate

__all__ = ["TemporaryDatabase", "create_database", "temporary_database"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _checked(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"{what} must be 1-63 lower-case letters, digits and underscores, starting with a "
            f"letter or underscore, got {name!r}")
    return name


def _config(config: StorageConfig | None) -> StorageConfig:
    return StorageConfig.load() if config is None else config


def _maintenance(config: StorageConfig, action: str) -> psycopg.Connection[Any]:
    last: psycopg.Error | None = None
    for database in ("postgres", "template1"):
        info = conninfo(config.with_overrides(database={"database": database}).database)
        try:
            return psycopg.connect(info, autocommit=True,
                                   connect_timeout=int(config.database.connection_timeout_sec))
        except psycopg.Error as exc:
            last = exc
    assert last is not None
    raise translate(last, action=f"{action} (connect to {config.database.describe()})") from None


def create_database(name: str, config: StorageConfig | None = None, *,
                    mark: str | None = None) -> StorageConfig:
    """Create database ``name`` on the server of ``config`` unless it exists; returns ``config``
    pointed at it (``agts demo`` uses this).

    Parameters
    ----------
    name
        Lower-case letters, digits and underscores.
    config
        Where the server is; default: the config file, environment or local default database,
        as for :func:`agts.connect`.
    mark
        Written as a new database's comment; an existing database is then used only if it carries
        the same mark, so a job that archives or deletes data runs only in a database it made.

    Raises
    ------
    ValidationError
        ``name`` is not a plain lower-case name.
    ConfigError
        (``mark``) the database exists without the mark.
    StorageError
        The server refused (for example, the login may not create databases).
    """
    _checked(name, "database name")
    config = _config(config)
    action = f"create database {name!r}"
    with _maintenance(config, action) as conn:
        try:
            found = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                "WHERE datname = %s", (name,)).fetchone()
            if found is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                if mark is not None:
                    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(name), sql.Literal(mark)))
                log.info("created database %s on %s", name, config.database.describe())
        except psycopg.Error as exc:
            raise translate(exc, action=action) from exc
    if found is not None and mark is not None and found[0] != mark:
        raise ConfigError(
            f"database {name!r} exists and was not made by this job (its comment is not "
            f"{mark!r}); it changes and drops data, so it runs only in a database of its own: "
            "choose a name that does not exist yet")
    return config.with_overrides(database={"database": name})


class TemporaryDatabase:
    """A new, empty database named ``<prefix>_<12 random hex digits>``, dropped by :meth:`drop`
    or at the end of a ``with`` block (which gives its :attr:`config`).

    Build it with :func:`agts.temporary_database`.

    Attributes
    ----------
    name : str
        The database's name.
    config : StorageConfig
        The settings it was made from, pointed at it.
    """

    def __init__(self, config: StorageConfig | None = None, *, prefix: str = "agts_tmp") -> None:
        _checked(prefix + "_000000000000", "prefix + '_' + 12 hex digits")
        base = _config(config)
        self.name = f"{prefix}_{secrets.token_hex(6)}"
        self._base = base
        action = f"create database {self.name!r}"
        with _maintenance(base, action) as conn:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.name)))
            except psycopg.Error as exc:
                raise translate(exc, action=action) from exc
        self.config = base.with_overrides(database={"database": self.name})
        self.dropped = False
        log.info("created temporary database %s on %s", self.name, base.database.describe())

    def __repr__(self) -> str:
        state = "dropped" if self.dropped else "live"
        return f"TemporaryDatabase({self.name!r}, {state})"

    def drop(self) -> None:
        """Drop the database (ending any session still in it). Safe to call twice."""
        if self.dropped:
            return
        action = f"drop temporary database {self.name!r}"
        with _maintenance(self._base, action) as conn:
            try:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.name)))
            except psycopg.Error as exc:
                raise translate(exc, action=action) from exc
        self.dropped = True
        log.info("dropped temporary database %s", self.name)

    def __enter__(self) -> StorageConfig:
        return self.config

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.drop()


def temporary_database(config: StorageConfig | None = None, *,
                       prefix: str = "agts_tmp") -> TemporaryDatabase:
    """A database of its own on the configured server, dropped when the ``with`` block ends.

    Parameters
    ----------
    config
        Where the server is; default: the config file, environment or local default database,
        as for :func:`agts.connect`.
    prefix
        The name's start (lower-case letters, digits and underscores).

    Raises
    ------
    ValidationError
        A bad prefix.
    StorageError
        The server refused (for example, the login may not create databases).

    Examples
    --------
    >>> with agts.temporary_database() as config, agts.connect(config, migrate=True) as engine:
    ...     engine.insert_metrics_batch(points)               # doctest: +SKIP

    In a notebook, keep the object and drop it in the last cell:

    >>> scratch = agts.temporary_database()                  # doctest: +SKIP
    >>> engine = agts.connect(scratch.config, migrate=True)  # doctest: +SKIP
    >>> engine.close(); scratch.drop()                       # doctest: +SKIP
    """
    return TemporaryDatabase(config, prefix=prefix)
