"""Connections, server capabilities and the local default cluster."""

from agts.db._database import Database, Edition, ServerInfo

__all__ = ["Database", "Edition", "ServerInfo"]
