"""Helpers shared by the subcommands: connecting from the global flags, printing results."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from agts._engine import StorageEngine, connect
from agts.config import StorageConfig
from agts.errors import StorageError

log = logging.getLogger(__name__)


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


def repeat(every: float | None, step: Callable[[], None], *, what: str) -> int:
    """Run ``step`` once, or every ``every`` seconds until SIGTERM/SIGINT (exit code 0).

    In a repeating service a transient error (the database restarting, a lost connection) is
    logged and the next round tries again; a terminal one ends the service with its error.
    """
    if not every:
        step()
        return 0
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            try:
                step()
            except StorageError as exc:
                if not exc.transient:
                    raise
                log.warning("%s failed, trying again in %gs: %s", what, every, exc)
            if stop.wait(every):
                return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
