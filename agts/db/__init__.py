"""Connections, server capabilities, the local default cluster and databases of their own."""

from agts.db._conninfo import conninfo, resolved_password
from agts.db._database import Database, Edition, ServerInfo
from agts.db._replicas import ReplicaState
from agts.db._scratch import TemporaryDatabase, create_database, temporary_database

__all__ = [
    "Database",
    "Edition",
    "ReplicaState",
    "ServerInfo",
    "TemporaryDatabase",
    "conninfo",
    "create_database",
    "resolved_password",
    "temporary_database",
]
