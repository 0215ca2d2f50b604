"""Durable files: the one fsync helper the spool and the cold tier share."""

from __future__ import annotations

import os

__all__ = ["fsync_path"]


def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or a directory (a directory's entry list: a rename or a delete in it is
    then on disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
