"""agts: a trading bot's metrics, orders, fills, positions and risk decisions in TimescaleDB,
handed back as Polars DataFrames.

Everything users may touch is imported here; other modules are private.
"""

from agts._engine import StorageEngine, connect
from agts._roles import RoleNames, create_roles, grant_role
from agts.archive import ArchiveReport
from agts.archive._cold import cold
from agts.config import StorageConfig
from agts.db import ServerInfo, TemporaryDatabase, create_database, temporary_database
from agts.errors import (
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
    "ArchiveReport",
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
