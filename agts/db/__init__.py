"""Connections, server capabilities, the local default cluster and databases of their own."""

from agts.db._database import Database, Edition, ServerInfo
from agts.db._scratch import TemporaryDatabase, create_database, temporary_database

__all__ = [
    "Database",
    "Edition",
    "ServerInfo",
    "TemporaryDatabase",
    "create_database",
    "temporary_database",
]
