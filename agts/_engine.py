"""StorageEngine: the entry point that owns the connections and hands out the other parts."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from agts.config import StorageConfig
from agts.db._database import Database, ServerInfo
from agts.errors import ConfigError

__all__ = ["StorageEngine", "connect"]

log = logging.getLogger(__name__)


class StorageEngine:
    """Metrics, execution history and archives in one TimescaleDB database.

    Build it with :func:`agts.connect`. It owns one psycopg pool and a few ADBC connections;
    close it (or use it in a ``with`` block) when done.

    Parameters
    ----------
    config
        The settings; see :class:`agts.StorageConfig`.
    """

    def __init__(self, config: StorageConfig) -> None:
        self.config = config
        self.db = Database(config.database)
        log.info(
            "connected to %s (PostgreSQL %s, TimescaleDB %s, %s edition)",
            config.database.describe(), self.server.postgres_version,
            self.server.timescaledb_version, self.server.edition,
        )

    def __repr__(self) -> str:
        return f"StorageEngine({self.config.database.describe()}, edition={self.server.edition!r})"

    def __enter__(self) -> StorageEngine:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Flush what is pending and close every connection. Safe to call twice."""
        self.db.close()

    @property
    def server(self) -> ServerInfo:
        """The server's versions and TimescaleDB edition, read at connect time."""
        return self.db.server

    # -- schema ------------------------------------------------------------------------------

    def migrate(self, target: int | None = None, *, directory: str | Path | None = None) -> list[Any]:
        """Apply pending migrations (to ``target``, default the latest). Idempotent.

        Returns
        -------
        list of MigrationStep
            What was applied, each with the edition-specific parts it skipped.
        """
        from agts._migrations import MigrationRunner

        runner = MigrationRunner(self.db, directory=Path(directory) if directory else None)
        return runner.up(target)


def connect(
    dsn_or_config: str | StorageConfig | os.PathLike[str] | None = None,
    *,
    migrate: bool = False,
) -> StorageEngine:
    """Connect to TimescaleDB and return a :class:`StorageEngine`.

    Parameters
    ----------
    dsn_or_config
        A libpq connection string or URI, a :class:`StorageConfig`, a path to a YAML config file,
        or None: the config file named by ``$AGTS_CONFIG`` (or ``./agts.yaml``), environment
        variables, and otherwise the local default database of ``agts local start``.
    migrate
        Apply pending migrations before returning.

    Raises
    ------
    ConnectError
        The database cannot be reached within ``database.connection_timeout_sec``; the message names
        host and port, never the password.
    ConfigError
        The configuration is invalid.

    Examples
    --------
    >>> with agts.connect() as engine:                     # doctest: +SKIP
    ...     engine.migrate()
    """
    if dsn_or_config is None:
        config = StorageConfig.load()
    elif isinstance(dsn_or_config, StorageConfig):
        config = dsn_or_config
    elif isinstance(dsn_or_config, os.PathLike) or (
        isinstance(dsn_or_config, str) and dsn_or_config.endswith((".yaml", ".yml"))
    ):
        config = StorageConfig.load(dsn_or_config)
    elif isinstance(dsn_or_config, str):
        config = StorageConfig.from_dsn(dsn_or_config)
    else:
        raise ConfigError(
            "connect() takes a DSN string, a StorageConfig, a YAML path or None, "
            f"got {type(dsn_or_config).__name__}"
        )
    engine = StorageEngine(config)
    if migrate:
        try:
            engine.migrate()
        except BaseException:
            engine.close()
            raise
    return engine
