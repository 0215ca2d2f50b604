"""Configuration: a YAML file, overridden by environment variables, overridden by arguments.

The file has the seed's four sections (``database``, ``ingestion``, ``retention``, ``query``) plus
``archive``. Every key can be set from the environment as ``AGTS_<SECTION>__<KEY>`` (for example
``AGTS_INGESTION__BATCH_SIZE=5000``); ``AGTS_DSN`` sets a whole connection string and
``AGTS_CONFIG`` names the file. The password is never stored in code: it comes from
``database.password`` in a file you keep private, ``AGTS_DATABASE__PASSWORD`` / ``PGPASSWORD``,
``database.password_file``, or ``~/.pgpass`` (libpq reads it). Passwords never appear in ``repr``,
logs or error messages.

With no file, no ``AGTS_*`` variable and no DSN, agts uses the local default database that
``agts local start`` runs (see :mod:`agts.db`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

import yaml

from agts._dsn import parse_dsn
from agts.errors import ConfigError, redact

__all__ = [
    "ArchiveConfig",
    "DatabaseConfig",
    "IngestionConfig",
    "QueryConfig",
    "RetentionConfig",
    "StorageConfig",
]

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
BackpressurePolicy = Literal["block", "raise", "drop_oldest"]
ReplicaChoice = Literal["round_robin", "least_lag"]

#: Port and database of the local default cluster (``agts local``) and of docker-compose.yml.
LOCAL_PORT = 55432
LOCAL_DATABASE = "ag_botkit"
LOCAL_USER = "agts"


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the database is and how to reach it.

    ``dsn``, when given, wins over the individual fields it sets (but
    :meth:`StorageConfig.with_overrides` writes host, port, database, user and password into the
    DSN, so an override means the same with or without one). ``password`` is hidden from
    ``repr``.
    """

    host: str = "127.0.0.1"
    port: int = LOCAL_PORT
    database: str = LOCAL_DATABASE
    user: str = LOCAL_USER
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    dsn: str | None = field(default=None, repr=False)
    max_connections: int = 10
    connection_timeout_sec: float = 5.0
    statement_timeout_sec: float | None = None
    sslmode: SslMode | None = None
    sslrootcert: str | None = None
    application_name: str = "agts"
    replicas: tuple[str, ...] = field(default=(), repr=False)
    replica_max_lag_sec: float = 5.0
    replica_choice: ReplicaChoice = "round_robin"
    replica_check_interval_sec: float = 1.0

    def __post_init__(self) -> None:
        _positive(self, "database", "port", self.port, maximum=65535)
        _positive(self, "database", "replica_max_lag_sec", self.replica_max_lag_sec)
        _positive(self, "database", "replica_check_interval_sec",
                  self.replica_check_interval_sec)
        _choice("database", "replica_choice", self.replica_choice, ReplicaChoice)
        if isinstance(self.replicas, str) or not isinstance(self.replicas, tuple | list):
            raise ConfigError("database.replicas must be a list of host:port entries or "
                              f"connection strings, got {type(self.replicas).__name__}")
        object.__setattr__(self, "replicas", tuple(self.replicas))
        for index, entry in enumerate(self.replicas):
            _check_replica(entry, index)
        _positive(self, "database", "max_connections", self.max_connections)
        _positive(self, "database", "connection_timeout_sec", self.connection_timeout_sec)
        if self.statement_timeout_sec is not None:
            _positive(self, "database", "statement_timeout_sec", self.statement_timeout_sec)
        _choice("database", "sslmode", self.sslmode, SslMode, optional=True)
        if not self.database:
            raise ConfigError("database.database must be a non-empty name, got ''")
        if self.dsn is not None:
            parse_dsn(self.dsn)  # refused here, with a message that shows no part of it

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr
        )
        hidden = []
        if self.password is not None:
            hidden.append("password='***'")
        if self.dsn is not None:
            hidden.append(f"dsn={redact(self.dsn)!r}")
        if self.replicas:
            hidden.append(f"replicas={tuple(redact(r) for r in self.replicas)!r}")
        return f"DatabaseConfig({', '.join([shown, *hidden])})"

    def describe(self) -> str:
        """``user@host:port/database``, for messages (no password)."""
        params: dict[str, Any] = {
            "host": self.host, "port": self.port, "dbname": self.database, "user": self.user,
        }
        if self.dsn:
            params.update(parse_dsn(self.dsn))  # valid: checked when the config was made
        return f"{params.get('user')}@{params.get('host')}:{params.get('port')}/{params.get('dbname')}"


@dataclass(frozen=True)
class IngestionConfig:
    """Buffered ingest knobs (the seed's), plus backpressure and the outage spool."""

    batch_size: int = 1000
    flush_interval_ms: int = 100
    max_buffer_size: int = 10000
    backpressure: BackpressurePolicy = "block"
    backpressure_timeout_sec: float = 30.0
    spool_dir: str | None = None
    spool_max_bytes: int = 1 << 30
    chunk_interval: str = "1 day"

    def __post_init__(self) -> None:
        _positive(self, "ingestion", "batch_size", self.batch_size)
        _positive(self, "ingestion", "flush_interval_ms", self.flush_interval_ms)
        _positive(self, "ingestion", "max_buffer_size", self.max_buffer_size)
        _positive(self, "ingestion", "backpressure_timeout_sec", self.backpressure_timeout_sec)
        _positive(self, "ingestion", "spool_max_bytes", self.spool_max_bytes)
        _choice("ingestion", "backpressure", self.backpressure, BackpressurePolicy)
        if self.max_buffer_size < self.batch_size:
            raise ConfigError(
                f"ingestion.max_buffer_size must be at least ingestion.batch_size "
                f"({self.batch_size!r}), got {self.max_buffer_size!r}"
            )


@dataclass(frozen=True)
class RetentionConfig:
    """How long data stays hot, per data kind and per metric name (days)."""

    metrics_retention_days: int = 90
    execution_retention_days: int = 365
    compression_after_days: int = 7
    per_metric_days: Mapping[str, int] = field(default_factory=dict)
    archive_before_drop: bool = True

    def __post_init__(self) -> None:
        _positive(self, "retention", "metrics_retention_days", self.metrics_retention_days)
        _positive(self, "retention", "execution_retention_days", self.execution_retention_days)
        _positive(self, "retention", "compression_after_days", self.compression_after_days)
        if not isinstance(self.per_metric_days, Mapping):
            raise ConfigError(
                "retention.per_metric_days must be a mapping of metric name to days, "
                f"got {self.per_metric_days!r}"
            )
        for name, days in self.per_metric_days.items():
            if not isinstance(days, int) or isinstance(days, bool) or days <= 0:
                raise ConfigError(
                    f"retention.per_metric_days[{name!r}] must be a positive integer, got {days!r}"
                )


@dataclass(frozen=True)
class QueryConfig:
    """Query limits and the result cache."""

    max_results: int = 10000
    cache_ttl_sec: float = 60.0
    cache_max_entries: int = 256

    def __post_init__(self) -> None:
        _positive(self, "query", "max_results", self.max_results)
        _non_negative(self, "query", "cache_ttl_sec", self.cache_ttl_sec)
        _non_negative(self, "query", "cache_max_entries", self.cache_max_entries)


@dataclass(frozen=True)
class ArchiveConfig:
    """Where the Parquet cold tier lives: a local directory or an ``s3://bucket/prefix`` URI."""

    root: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None

    def __post_init__(self) -> None:
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"archive.root must be a path or s3:// URI, got {self.root!r}")


_SECTIONS: dict[str, type] = {
    "database": DatabaseConfig,
    "ingestion": IngestionConfig,
    "retention": RetentionConfig,
    "query": QueryConfig,
    "archive": ArchiveConfig,
}


@dataclass(frozen=True)
class StorageConfig:
    """All of agts' settings. Immutable; build variants with :meth:`with_overrides`.

    Examples
    --------
    >>> cfg = StorageConfig.load(overrides={"ingestion": {"batch_size": 5000}})
    >>> cfg.ingestion.batch_size
    5000
    """

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    ingestion: IngestionConfig = field(default_factory=IngestionConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    query: QueryConfig = field(default_factory=QueryConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    source: str = "defaults"

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> StorageConfig:
        """Load the configuration: defaults < YAML file < environment < ``overrides``.

        Parameters
        ----------
        path
            A YAML file. ``None`` uses ``$AGTS_CONFIG`` if set, else ``./agts.yaml`` if present,
            else no file.
        env
            The environment to read ``AGTS_*`` variables from (default ``os.environ``).
        overrides
            ``{"section": {"key": value}}`` applied last.

        Raises
        ------
        ConfigError
            A file that cannot be read or parsed, an unknown section or key, or a bad value; the
            message names the key, the value and what is allowed.
        """
        env = os.environ if env is None else env
        layers: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        sources = ["defaults"]
        file = Path(path) if path is not None else _default_file(env)
        if file is not None:
            _merge(layers, _read_yaml(file), origin=str(file))
            sources.append(str(file))
        env_layer = _from_env(env)
        if any(env_layer.values()):
            _merge(layers, env_layer, origin="environment")
            sources.append("environment")
        if overrides:
            _merge(layers, {k: dict(v) for k, v in overrides.items()}, origin="arguments")
            sources.append("arguments")
        built = {name: _build(section_cls, name, layers[name]) for name, section_cls in
                 _SECTIONS.items()}
        return cls(**built, source=" < ".join(sources))

    @classmethod
    def from_dsn(cls, dsn: str, **overrides: Mapping[str, Any]) -> StorageConfig:
        """A configuration for one connection string (environment and files are still read)."""
        merged: dict[str, Mapping[str, Any]] = dict(overrides)
        merged["database"] = {**dict(overrides.get("database", {})), "dsn": dsn}
        return cls.load(overrides=merged)

    def with_overrides(self, **sections: Mapping[str, Any]) -> StorageConfig:
        """A copy with some keys replaced: ``cfg.with_overrides(query={"max_results": 10})``."""
        changed: dict[str, Any] = {}
        for name, values in sections.items():
            if name not in _SECTIONS:
                raise ConfigError(_unknown("section", name, _SECTIONS))
            current = getattr(self, name)
            data = {f.name: getattr(current, f.name) for f in fields(current)}
            _check_keys(name, values, data)
            if name == "database" and data["dsn"] and "dsn" not in values:
                values = _into_dsn(data["dsn"], values)
            changed[name] = _build(_SECTIONS[name], name, {**data, **values})
        return replace(self, **changed)


#: Database fields a connection string can also set, with their libpq names.
_DSN_KEYS = {"host": "host", "port": "port", "database": "dbname", "user": "user",
             "password": "password"}


def _into_dsn(dsn: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides of a config that has a DSN: the fields the DSN also sets go into it, so that
    ``with_overrides(database={"database": "other"})`` means the same with or without one."""
    from psycopg.conninfo import make_conninfo

    moved = {_DSN_KEYS[k]: v for k, v in values.items() if k in _DSN_KEYS and v is not None}
    if not moved:
        return dict(values)
    return {**values, "dsn": make_conninfo(**{**parse_dsn(dsn), **moved})}


def _default_file(env: Mapping[str, str]) -> Path | None:
    if env.get("AGTS_CONFIG"):
        return Path(env["AGTS_CONFIG"])
    local = Path("agts.yaml")
    return local if local.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return data


def _from_env(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, value in env.items():
        if not key.startswith("AGTS_") or "__" not in key:
            continue
        section, _, name = key[5:].lower().partition("__")
        if section not in _SECTIONS:
            raise ConfigError(_unknown(f"section in environment variable {key}", section, _SECTIONS))
        layer[section][name] = value
    if env.get("AGTS_DSN"):
        layer["database"]["dsn"] = env["AGTS_DSN"]
    return layer


def _merge(layers: dict[str, dict[str, Any]], data: Mapping[str, Any], *, origin: str) -> None:
    for section, values in data.items():
        if section not in _SECTIONS:
            raise ConfigError(_unknown(f"section in {origin}", section, _SECTIONS))
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{section} in {origin} must be a mapping, got {values!r}")
        names = {f.name: None for f in fields(_SECTIONS[section])}
        _check_keys(section, values, names)
        layers[section].update(values)


def _check_keys(section: str, values: Mapping[str, Any], allowed: Mapping[str, Any]) -> None:
    for key in values:
        if key not in allowed:
            raise ConfigError(_unknown(f"key in section {section!r}", key, allowed))


def _unknown(what: str, name: str, allowed: Mapping[str, Any]) -> str:
    return f"unknown {what}: {name!r}; allowed: {', '.join(sorted(allowed))}"


def _build(section_cls: type, section: str, values: Mapping[str, Any]) -> Any:
    hints = get_type_hints(section_cls)
    coerced = {k: _coerce(section, k, v, hints[k]) for k, v in values.items()}
    try:
        return section_cls(**coerced)
    except TypeError as exc:  # pragma: no cover - keys are checked before
        raise ConfigError(f"{section}: {exc}") from None


def _coerce(section: str, key: str, value: Any, hint: Any) -> Any:
    """Turn environment strings into the field's type; reject wrong types from YAML."""
    text = str(hint)
    if value is None:
        return None
    want_int = hint is int or text in {"int", "int | None"}
    want_float = hint is float or text in {"float", "float | None"}
    try:
        if want_int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, str):
                return int(value.strip())
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if want_float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is bool or text == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in {"1", "true", "yes", "on"}:
                    return True
                if lowered in {"0", "false", "no", "off"}:
                    return False
                raise ValueError
            if not isinstance(value, bool):
                raise ValueError
            return value
        if "Mapping" in text and isinstance(value, str):
            loaded = yaml.safe_load(value)
            return loaded if loaded is not None else {}
        if text.startswith("tuple[str"):
            if isinstance(value, str):  # the environment: comma-separated (or a YAML list)
                stripped = value.strip()
                items = yaml.safe_load(stripped) if stripped.startswith("[") else [
                    part for part in (p.strip() for p in stripped.split(",")) if part]
                if not isinstance(items, list):
                    raise ConfigError(f"{section}.{key} must be a list (comma-separated in the environment)")
                return tuple(items)
            if isinstance(value, list | tuple):
                return tuple(value)
            raise ConfigError(f"{section}.{key} must be a list, got {type(value).__name__}")
    except (TypeError, ValueError):
        kind = "an integer" if want_int else "a number" if want_float else "true or false"
        shown = "***" if key == "password" else repr(value)
        raise ConfigError(f"{section}.{key} must be {kind}, got {shown}") from None
    if ("str" in text and "Mapping" not in text) and not isinstance(value, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{section}.{key} must be a string, got {value!r}")
    return value


def _check_replica(entry: Any, index: int) -> None:
    what = f"database.replicas[{index}]"
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{what} must be host, host:port or a connection string, got "
                          f"{type(entry).__name__ if not isinstance(entry, str) else repr(entry)}")
    text = entry.strip()
    if "=" in text or "://" in text:
        parse_dsn(text, what=what)
        return
    host, colon, port = text.rpartition(":")
    if colon and host and not (port.isdigit() and 0 < int(port) <= 65535):
        raise ConfigError(f"{what}: the port must be a number from 1 to 65535, got {port!r}")


def _positive(obj: Any, section: str, key: str, value: Any, *, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 or (
        maximum is not None and value > maximum
    ):
        bound = f" and at most {maximum!r}" if maximum is not None else ""
        raise ConfigError(f"{section}.{key} must be a positive number{bound}, got {value!r}")


def _non_negative(obj: Any, section: str, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{section}.{key} must be zero or a positive number, got {value!r}")


def _choice(section: str, key: str, value: Any, choices: Any, *, optional: bool = False) -> None:
    allowed = get_args(choices)
    if value is None and optional:
        return
    if value not in allowed:
        raise ConfigError(
            f"{section}.{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        )

