"""Helpers shared by the subcommands: connecting from the global flags, printing results."""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime
from typing import Any

from agts._engine import StorageEngine, connect
from agts.config import StorageConfig


def config_from_args(args: argparse.Namespace) -> StorageConfig:
    """The settings from ``--dsn`` / ``--config`` / the environment / the local default."""
    if getattr(args, "dsn", None):
        return StorageConfig.from_dsn(args.dsn)
    if getattr(args, "config", None):
        return StorageConfig.load(args.config)
    return StorageConfig.load()


def engine_from_args(args: argparse.Namespace) -> StorageEngine:
    """Connect using ``--dsn`` / ``--config`` / the environment / the local default."""
    return connect(config_from_args(args))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(text: str) -> float:
    """``--every`` values: a positive whole number with a unit s, m, h or d, in seconds."""
    text = text.strip()
    unit = text[-1:]
    if unit not in _UNITS or not text[:-1].isdigit() or int(text[:-1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"interval must be a positive number with a unit s, m, h or d, got {text!r}")
    return int(text[:-1]) * _UNITS[unit]


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def print_json(data: Any) -> None:
    def default(value: Any) -> Any:
        if isinstance(value, datetime | date):
            return value.isoformat()
        if hasattr(value, "__dataclass_fields__"):
            return {k: getattr(value, k) for k in value.__dataclass_fields__}
        return str(value)

    print(json.dumps(data, default=default, indent=2, sort_keys=True))
