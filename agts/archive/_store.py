"""Where the cold tier's files live: a local directory or an S3-compatible bucket.

Both go through :mod:`pyarrow.fs`. A file appears under its final name only when it is complete:
locally it is written to a hidden temporary name in the same directory, flushed to disk
(``fsync``) and renamed; on S3 a ``PUT`` (or a completed multipart upload) is atomic by itself, so
it is written straight to its key. S3 credentials come from the usual AWS sources (environment,
``~/.aws``); they are never logged.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from agts._files import fsync_path
from agts.config import ArchiveConfig
from agts.errors import ArchiveError, ConfigError

__all__ = ["ArchiveStore", "HashingWriter"]

log = logging.getLogger(__name__)

_READ_BLOCK = 1 << 22

#: File versions (uri, size, mtime) whose sha256 matched the manifest in this process.
_VERIFIED: dict[tuple[str, int, int | None], str] = {}
_VERIFIED_MAX = 100_000


class HashingWriter(io.RawIOBase):
    """A write-only stream that passes bytes on to ``raw`` and keeps their sha256 and count."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.size += len(view)
        self.raw.write(view)
        return len(view)

    def tell(self) -> int:
        return self.size


class ArchiveStore:
    """The archive root: ``/a/local/dir`` or ``s3://bucket/prefix``.

    Parameters
    ----------
    root
        A local directory (created on first write) or an ``s3://`` URI.
    s3_endpoint
        ``http://host:port`` of an S3-compatible server (MinIO, moto, ...); None for AWS.
    s3_region
        The bucket's region.
    """

    def __init__(self, root: str, *, s3_endpoint: str | None = None,
                 s3_region: str | None = None) -> None:
        if not root:
            raise ConfigError("archive.root must be a directory or an s3:// URI, got ''")
        self.root = root.rstrip("/") if root.startswith("s3://") else str(Path(root).expanduser())
        self.is_s3 = root.startswith("s3://")
        self.s3_endpoint = s3_endpoint
        self.s3_region = s3_region
        self.fs: pafs.FileSystem
        if self.is_s3:
            self.base = root[len("s3://"):].strip("/")
            if not self.base:
                raise ConfigError(f"archive.root must name a bucket, got {root!r}")
            options: dict[str, Any] = {}
            if s3_endpoint:
                scheme, _, host = s3_endpoint.partition("://")
                if not host:
                    scheme, host = "https", s3_endpoint
                options.update(endpoint_override=host.rstrip("/"), scheme=scheme)
            if s3_region:
                options["region"] = s3_region
            self.fs = pafs.S3FileSystem(**options)
        else:
            self.base = str(Path(self.root).resolve())
            self.fs = pafs.LocalFileSystem()

    @classmethod
    def from_config(cls, config: ArchiveConfig, root: str | None = None) -> ArchiveStore:
        """The store of ``root`` (default ``archive.root``).

        Raises
        ------
        ConfigError
            Neither is set.
        """
        chosen = root if root is not None else config.root
        if not chosen:
            raise ConfigError(
                "no archive root: set archive.root (a directory or s3://bucket/prefix) in the "
                "config or AGTS_ARCHIVE__ROOT, or pass root=")
        return cls(str(chosen), s3_endpoint=config.s3_endpoint, s3_region=config.s3_region)

    def __repr__(self) -> str:
        return f"ArchiveStore({self.root!r})"

    def path(self, relative: str) -> str:
        """The filesystem path of a file given relative to the root.

        Raises
        ------
        ArchiveError
            ``relative`` would leave the root: absolute, with a ``..`` or empty component, a
            backslash or a NUL (paths come from the database's manifest rows: a tampered row must
            not make agts read or delete a file elsewhere).
        """
        if not relative:
            return self.base
        parts = relative.split("/")
        if (relative.startswith("/") or "\\" in relative or "\0" in relative
                or any(part in ("", ".", "..") for part in parts)):
            raise ArchiveError(
                f"refusing the archive path {relative!r}: it is not a plain path inside the root "
                f"{self.root!r}", path=self.root)
        return f"{self.base}/{relative}"

    def uri(self, relative: str) -> str:
        """A URI or local path users can hand to other tools."""
        return f"s3://{self.path(relative)}" if self.is_s3 else self.path(relative)

    def file_uri(self, relative: str) -> str:
        """The URI an Iceberg table records for a file (``file:///...`` or ``s3://...``)."""
        return f"s3://{self.path(relative)}" if self.is_s3 else f"file://{self.path(relative)}"

    def relative(self, uri: str) -> str:
        """The path relative to the root of a file URI found in a catalog or manifest.

        Raises
        ------
        ArchiveError
            The URI is not a plain path inside this root (another scheme, another directory or
            bucket, ``..``): a tampered catalog row must not make agts read a file elsewhere.
        """
        prefix = f"s3://{self.base}/" if self.is_s3 else f"file://{self.base}/"
        plain = uri
        if not self.is_s3 and uri.startswith("/"):
            plain = "file://" + uri
        if not plain.startswith(prefix):
            raise ArchiveError(
                f"refusing the archived file {uri!r}: it is not inside the archive root "
                f"{self.root!r}", path=self.root)
        relative = plain[len(prefix):]
        self.path(relative)  # refuses "..", empty parts, backslashes
        return relative

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def open_atomic(self, relative: str) -> Iterator[HashingWriter]:
        """A stream whose bytes appear at ``relative`` only if the block completes."""
        final = self.path(relative)
        parent = final.rpartition("/")[0]
        if self.is_s3:
            with self._errors("write", relative):
                raw = self.fs.open_output_stream(final)
            try:
                writer = HashingWriter(raw)
                yield writer
            except BaseException:
                with contextlib.suppress(Exception):
                    raw.abort() if hasattr(raw, "abort") else None
                raise
            with self._errors("write", relative):
                raw.close()
            return
        with self._errors("write", relative):
            os.makedirs(parent, exist_ok=True)
            temp = f"{parent}/.{final.rpartition('/')[2]}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                with open(temp, "wb") as handle:
                    # Held while the file is written: remove_stray_temp_files() leaves it alone.
                    # The kernel drops the lock when the process dies: a killed writer's file is
                    # stray.
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    writer = HashingWriter(handle)
                    yield writer
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, final)
                fsync_path(parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise

    def write_bytes(self, relative: str, data: bytes) -> None:
        """Write a small file atomically (the manifest)."""
        with self.open_atomic(relative) as out:
            out.write(data)

    def delete(self, relative: str) -> None:
        with contextlib.suppress(FileNotFoundError), self._errors("delete", relative):
            self.fs.delete_file(self.path(relative))

    # -- reading -----------------------------------------------------------------------------

    def sha256(self, relative: str) -> tuple[str, int]:
        """The sha256 (hex) and size in bytes of a stored file, read back in full."""
        digest = hashlib.sha256()
        size = 0
        with self._errors("read", relative), self.fs.open_input_stream(self.path(relative)) as src:
            while True:
                block = src.read(_READ_BLOCK)
                if not block:
                    break
                digest.update(block)
                size += len(block)
        return digest.hexdigest(), size

    def check(self, relative: str, *, size: int, sha256: str, again: bool = False) -> None:
        """Check that a stored file is the one the manifest recorded (its size and sha256) before
        its rows are used. The sha256 is computed once per file version in a process: a file
        whose size and modification time have not changed since it matched is not read again
        (``again``: read it anyway).

        Raises
        ------
        ArchiveError
            The file is missing, or its size or sha256 is not what was recorded (replaced, cut
            short or damaged); the message names it.
        """
        uri = self.uri(relative)
        try:
            with self._errors("stat", relative):
                info = self.fs.get_file_info(self.path(relative))
        except FileNotFoundError:
            info = None
        if info is None or info.type != pafs.FileType.File:
            raise ArchiveError(f"the archived file {uri!r} is missing", path=uri)
        version = (uri, info.size, info.mtime_ns)
        if not again and _VERIFIED.get(version) == sha256:
            return
        if info.size != size:
            raise ArchiveError(f"the archived file {uri!r} holds {info.size} bytes, the manifest "
                               f"recorded {size}: it was replaced or cut short", path=uri)
        try:
            actual, _ = self.sha256(relative)
        except FileNotFoundError:
            raise ArchiveError(f"the archived file {uri!r} is missing", path=uri) from None
        if actual != sha256:
            raise ArchiveError(f"the archived file {uri!r} does not match its recorded sha256 "
                               f"({actual[:12]}… instead of {sha256[:12]}…): it was replaced or "
                               "damaged", path=uri)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[version] = sha256

    def exists(self, relative: str) -> bool:
        with self._errors("stat", relative):
            return self.fs.get_file_info(self.path(relative)).type == pafs.FileType.File

    def read_bytes(self, relative: str) -> bytes:
        with self._errors("read", relative), self.fs.open_input_stream(self.path(relative)) as src:
            return bytes(src.read())

    def remove_stray_temp_files(self, relative_dir: str) -> int:
        """Delete the temporary files that interrupted local writes (a killed process) left under
        ``relative_dir``; a file some live writer still holds is kept. Returns how many went."""
        if self.is_s3:
            return 0  # an interrupted S3 upload leaves no object
        selector = pafs.FileSelector(self.path(relative_dir), recursive=True, allow_not_found=True)
        removed = 0
        with self._errors("list", relative_dir):
            found = self.fs.get_file_info(selector)
        for info in found:
            if not (info.base_name.startswith(".") and info.base_name.endswith(".tmp")):
                continue
            try:
                with open(info.path, "rb") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.unlink(info.path)
            except BlockingIOError:
                continue  # being written now
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove stray temporary file %s: %s", info.path, exc)
                continue
            removed += 1
            log.info("removed stray temporary file %s (an interrupted write)", info.path)
        return removed

    @contextlib.contextmanager
    def _errors(self, action: str, relative: str) -> Iterator[None]:
        """File faults as :class:`ArchiveError` naming the file; ``FileNotFoundError`` passes
        (callers that expect a missing file catch it)."""
        try:
            yield
        except FileNotFoundError:
            raise
        except OSError as exc:
            full = exc.errno == errno.ENOSPC
            raise ArchiveError(
                f"cannot {action} {self.uri(relative)!r} in the archive: "
                f"{exc.strerror or exc}{' (the archive root is full)' if full else ''}",
                path=self.uri(relative), transient=full or None) from exc
