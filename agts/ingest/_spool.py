"""The outage spool: batches that could not be written, as fsync'd Arrow IPC files, in order.

Each file is one batch: ``<sequence>-<batch id>.arrow``, written to a ``.tmp`` name, fsync'd, renamed
and the directory fsync'd, so a file either is complete or does not exist. Its columns are the
normalized points with ``metric_name`` and ``labels`` dictionary-encoded (one dictionary entry per
series); the batch id is in the schema metadata, so a replay after a crash between commit and
delete is recognized by the ledger and not stored twice. An exclusive ``flock`` on ``.lock`` keeps
two ingestors from sharing one spool.

A file named like a spool file that cannot be read back (empty, cut short, not Arrow IPC, not the
columns above) is moved to ``failed/`` with a log line, and the files after it are replayed; an
``.arrow`` file with another name is not agts' and is left alone with a warning.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import uuid
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from agts._files import fsync_path
from agts.errors import SpoolFullError, StorageError
from agts.ingest._normalize import Normalized

__all__ = ["Spool"]

log = logging.getLogger(__name__)

_META = b"agts.batch_id"
#: ``<sequence, 12 digits or more>-<batch id>.arrow``; the ``.tmp`` twin is a write a crash
#: interrupted.
_NAME = re.compile(r"^(\d{12,})-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                   r"\.(arrow|tmp)$")


class Spool:
    """A directory of spooled batches, oldest first.

    Parameters
    ----------
    directory
        Created if missing.
    max_bytes
        Size cap of all spooled files together; :meth:`append` raises :class:`SpoolFullError`
        beyond it.

    Raises
    ------
    StorageError
        Another ingestor holds the directory.
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int) -> None:
        self.directory = Path(directory).expanduser()
        self.max_bytes = max_bytes
        #: Spool files moved to ``failed/`` because they could not be read back, files that could
        #: not even be moved (left in place, skipped until the next start), and the last reason.
        self.unreadable = 0
        self.unmovable = 0
        self.unreadable_reason: str | None = None
        where = str(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not os.access(self.directory, os.W_OK | os.X_OK):
                raise PermissionError(13, "not writable")
            self._lock_file = open(self.directory / ".lock", "a")  # noqa: SIM115 - held until close
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise StorageError(f"spool directory {where!r} cannot be used: {reason}") from exc
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            raise StorageError(f"spool directory {where!r} is in use by another ingestor") from None
        found: list[tuple[int, Path]] = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match is None or not path.is_file() or path.is_symlink():
                if path.suffix in (".arrow", ".tmp") and path.name != ".lock":
                    log.warning("spool %s: ignoring %s, which is not a spool file", where,
                                path.name)
            elif match.group(2) == "tmp":
                path.unlink()  # a write interrupted before its rename: never acknowledged
            else:
                found.append((int(match.group(1)), path))
        self._files: list[Path] = [p for _, p in sorted(found)]  # by sequence, not by text
        self.bytes = sum(p.stat().st_size for p in self._files)
        self._next = max(n for n, _ in found) + 1 if found else 0
        if self._files:
            log.info("spool %s holds %d batches (%d bytes) to replay", where,
                     len(self._files), self.bytes)

    def __len__(self) -> int:
        return len(self._files)

    def close(self) -> None:
        """Release the directory."""
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def set_aside(self, batch: Normalized, batch_id: str) -> Path:
        """Keep a batch the database refused for good in ``failed/`` (never replayed, never
        counted against the cap), for a person to inspect."""
        folder = self.directory / "failed"
        folder.mkdir(exist_ok=True)
        final = folder / f"{batch_id}.arrow"
        tmp = final.with_suffix(".tmp")
        _write_ipc(_encode(batch, batch_id), tmp)
        os.replace(tmp, final)
        fsync_path(folder)
        return final

    def append(self, batch: Normalized, batch_id: str) -> Path:
        """Write ``batch`` durably as the newest file."""
        table = _encode(batch, batch_id)
        final = self.directory / f"{self._next:012d}-{batch_id}.arrow"
        tmp = final.with_suffix(".tmp")
        try:
            size = _write_ipc(table, tmp, sync=False)
            if self.bytes + size <= self.max_bytes:
                fsync_path(tmp)
        except OSError as exc:
            # A full disk (or quota) is the same condition as the size cap: the batch is not
            # accepted, nothing half-written stays behind, and the caller keeps it in memory
            # (tests/reliability/test_faults.py, a 256 KiB tmpfs).
            tmp.unlink(missing_ok=True)
            raise SpoolFullError(
                f"spool {str(self.directory)!r} is full: cannot write a batch ({self.bytes} bytes "
                f"held): {exc.strerror or exc}"
            ) from exc
        if self.bytes + size > self.max_bytes:
            tmp.unlink()
            raise SpoolFullError(
                f"spool {str(self.directory)!r} is full: {self.bytes} bytes held, a batch of "
                f"{size} bytes would pass ingestion.spool_max_bytes = {self.max_bytes}"
            )
        os.replace(tmp, final)
        fsync_path(self.directory)
        self._files.append(final)
        self.bytes += size
        self._next += 1
        return final

    def oldest(self) -> tuple[Path, Normalized, str] | None:
        """The oldest readable spooled batch and its id, or None. Unreadable files met on the
        way are moved to ``failed/`` (see the module docstring)."""
        while self._files:
            path = self._files[0]
            try:
                batch, batch_id = _decode(path)
            except Exception as exc:  # damaged or foreign: whatever reading it raised
                self._set_aside_file(path, exc)
                continue
            return path, batch, batch_id
        return None

    def _set_aside_file(self, path: Path, exc: BaseException) -> None:
        self._files.remove(path)
        self.unreadable_reason = f"spool file {str(path)!r} cannot be read: {exc}"
        folder = self.directory / "failed"
        try:
            size = path.stat().st_size
            folder.mkdir(exist_ok=True)
            os.replace(path, folder / path.name)
            fsync_path(folder)
            fsync_path(self.directory)
        except OSError as move:
            self.unmovable += 1
            self.unreadable_reason += f"; it cannot be moved to failed/ either ({move})"
            log.error("spool %s: %s cannot be read (%s) nor moved aside (%s); skipped until the "
                      "next start", self.directory, path.name, exc, move)
            return
        self.unreadable += 1
        self.bytes -= size
        log.error("spool %s: %s cannot be read (%s); moved to %s", self.directory, path.name,
                  exc, folder)

    def remove(self, path: Path) -> None:
        """Delete a replayed file."""
        size = path.stat().st_size
        path.unlink()
        fsync_path(self.directory)
        self._files.remove(path)
        self.bytes -= size


#: The columns of a spool file (see :func:`_encode`).
_SCHEMA = pa.schema([
    ("time", pa.timestamp("us", tz="UTC")),
    ("metric_name", pa.dictionary(pa.int32(), pa.string())),
    ("labels", pa.dictionary(pa.int32(), pa.string())),
    ("value", pa.float64()),
])


def _decode(path: Path) -> tuple[Normalized, str]:
    """A spool file's batch and id; raises what reading a damaged or foreign file raises."""
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all().combine_chunks()
    batch_id = str(uuid.UUID((table.schema.metadata or {}).get(_META, b"").decode()))
    if table.schema.remove_metadata() != _SCHEMA:
        raise TypeError(f"not the columns of a spooled batch: {table.schema.remove_metadata()}")
    if table.num_rows == 0:
        return Normalized(pl.DataFrame(), pl.DataFrame()), batch_id
    names = table.column("metric_name").chunk(0)
    labels = table.column("labels").chunk(0)
    if len(names.dictionary) != len(labels.dictionary) or not pc.all(pc.equal(
            names.indices, labels.indices)).as_py():
        raise ValueError("the metric_name and labels dictionaries do not line up")
    if pc.min(names.indices).as_py() < 0 or pc.max(
            names.indices).as_py() >= len(names.dictionary):
        raise ValueError("a series key lies outside the batch's series")
    points = pl.DataFrame({
        "time": pl.Series(table.column("time")).cast(pl.Datetime("us", "UTC")),
        "key": pl.Series(names.indices).cast(pl.UInt32),
        "value": pl.Series(table.column("value")).cast(pl.Float64),
    })
    series = pl.DataFrame({
        "metric_name": pl.Series(names.dictionary, dtype=pl.String),
        "labels": pl.Series(labels.dictionary, dtype=pl.String),
    })
    return Normalized(points, series), batch_id


def _encode(batch: Normalized, batch_id: str) -> pa.Table:
    points = batch.points
    keys = pa.array(points.get_column("key").to_numpy(), pa.int32())
    return pa.table({
        "time": points.get_column("time").to_arrow(),
        "metric_name": pa.DictionaryArray.from_arrays(
            keys, batch.series.get_column("metric_name").to_arrow().cast(pa.string())),
        "labels": pa.DictionaryArray.from_arrays(
            keys, batch.series.get_column("labels").to_arrow().cast(pa.string())),
        "value": points.get_column("value").to_arrow(),
    }).replace_schema_metadata({_META: batch_id.encode()})


def _write_ipc(table: pa.Table, path: Path, *, sync: bool = True) -> int:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))
    if sync:
        fsync_path(path)
    return path.stat().st_size

