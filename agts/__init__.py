"""agts: a trading bot's metrics, orders, fills, positions and risk decisions in TimescaleDB,
handed back as Polars DataFrames.

Everything users may touch is imported here; other modules are private.
"""

from agts._aio import AsyncView
from agts._engine import StorageEngine, connect
from agts._migrations import MigrationStep
from agts._roles import RoleNames, create_roles, grant_role
from agts.archive import ArchiveReport, cold
from agts.config import StorageConfig
from agts.db import ServerInfo, TemporaryDatabase, create_database, temporary_database
from agts.errors import (
    ArchiveError,
    BackpressureError,
    ConfigError,
    ConflictError,
    ConnectError,
    ConstraintError,
    EditionError,
    MigrationError,
    QueryError,
    ResultTooLargeError,
    SpoolFullError,
    StorageError,
    ValidationError,
)
from agts.execution import (
    ExecutionStore,
    Fill,
    Order,
    OrderFilters,
    OrderHistory,
    OrderState,
    PositionSnapshot,
    RiskDecision,
)
from agts.ingest import Ingestor, IngestResult, IngestStats, MetricPoint
from agts.query import next_cursor
from agts.retention import RetentionReport

__version__ = "0.1.0"

__all__ = [
    "ArchiveError",
    "ArchiveReport",
    "AsyncView",
    "BackpressureError",
    "ConfigError",
    "ConflictError",
    "ConnectError",
    "ConstraintError",
    "EditionError",
    "ExecutionStore",
    "Fill",
    "IngestResult",
    "IngestStats",
    "Ingestor",
    "MetricPoint",
    "MigrationError",
    "MigrationStep",
    "Order",
    "OrderFilters",
    "OrderHistory",
    "OrderState",
    "PositionSnapshot",
    "QueryError",
    "ResultTooLargeError",
    "RetentionReport",
    "RiskDecision",
    "RoleNames",
    "ServerInfo",
    "SpoolFullError",
    "StorageConfig",
    "StorageEngine",
    "StorageError",
    "TemporaryDatabase",
    "ValidationError",
    "__version__",
    "cold",
    "connect",
    "create_database",
    "create_roles",
    "grant_role",
    "next_cursor",
    "temporary_database",
]


def _present_as_agts() -> None:
    """Give the exported classes and functions the module users see (``agts.StorageEngine`` in
    tracebacks, reprs and the API reference, not ``agts._engine.StorageEngine``).

    A class's own annotations are resolved first, where they were written: tools that read them
    (``typing.get_type_hints``, the API reference) look names up in ``__module__``'s namespace.
    """
    import typing

    namespace = globals()
    for name in __all__:
        obj = namespace[name]
        if not (isinstance(obj, type) or callable(obj)) or not str(
                getattr(obj, "__module__", "")).startswith("agts."):
            continue
        if "__annotations__" in getattr(obj, "__dict__", {}) or not isinstance(obj, type):
            hints = typing.get_type_hints(obj, include_extras=True)
            obj.__annotations__ = {k: hints.get(k, v) for k, v in obj.__annotations__.items()}
        obj.__module__ = __name__


_present_as_agts()
