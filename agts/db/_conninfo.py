"""From a :class:`~agts.config.DatabaseConfig` (data) to a libpq conninfo string: here the password
is looked up (``password``, ``password_file``, ``PGPASSWORD``, the local cluster's generated one)
and the session options agts needs are added. The configuration itself does no I/O.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from agts._dsn import parse_dsn
from agts.config import DatabaseConfig
from agts.errors import ConfigError

__all__ = ["conninfo", "resolved_password"]


def resolved_password(config: DatabaseConfig) -> str | None:
    """The password from ``password``, ``password_file`` or ``PGPASSWORD`` (in that order).

    For the local default cluster (``agts local``) the password it generated is used. ``None``
    lets libpq fall back to ``~/.pgpass``.

    Raises
    ------
    ConfigError
        ``password_file`` cannot be read.
    """
    if config.password is not None:
        return config.password
    if config.password_file:
        path = Path(config.password_file).expanduser()
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"database.password_file {str(path)!r} cannot be read: {exc.strerror}"
            ) from exc
    env_password = os.environ.get("PGPASSWORD")
    if env_password:
        return env_password
    from agts.db._local import local_password, local_port

    if config.dsn is None and config.host in {"127.0.0.1", "localhost"} \
            and config.port == local_port():
        # The local default cluster (agts local start) keeps its generated password there.
        return local_password()
    return None


def conninfo(config: DatabaseConfig) -> str:
    """A libpq conninfo string for psycopg and ADBC. Contains the password: never log it."""
    params: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "dbname": config.database,
        "user": config.user,
        "connect_timeout": max(1, round(config.connection_timeout_sec)),
        "application_name": config.application_name,
    }
    if config.sslmode:
        params["sslmode"] = config.sslmode
    if config.sslrootcert:
        params["sslrootcert"] = config.sslrootcert
    if config.dsn:
        params.update(parse_dsn(config.dsn))
    password = resolved_password(config)
    if password is not None and "password" not in params:
        params["password"] = password
    # Migration 0001 creates TimescaleDB in public; a database that had the extension before
    # may have it elsewhere (in "$user", for a role named like a schema). Every session puts
    # both on its path, so reader and writer roles find time_bucket() wherever it is
    # (tests/reliability/test_privileges.py).
    options = [params["options"]] if params.get("options") else []
    if "search_path" not in " ".join(options):
        options.append("-c search_path=$user,public,agts")
    if config.statement_timeout_sec is not None:
        ms = int(config.statement_timeout_sec * 1000)
        options.append(f"-c statement_timeout={ms}")
    params["options"] = " ".join(options)
    return str(make_conninfo(**{k: v for k, v in params.items() if v is not None}))
