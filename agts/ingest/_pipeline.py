"""The buffered ingest pipeline: producers put, one background thread writes.

Producers (threads, or asyncio tasks through :meth:`Ingestor.aput`) validate and buffer their
points and return at once while there is room; a flusher thread cuts batches of ``batch_size`` (or
whatever is there after ``flush_interval_ms``), gives each a batch id and writes it through the
idempotent writer, retrying transient failures a few times with a short backoff. A batch that still
cannot be written goes to the outage spool; while the spool holds batches, newer batches queue
behind them there, and the spool is replayed oldest first when the database answers again. A point
is *acknowledged* when ``put`` returns: from then on it is in memory until it is stored or spooled.

The flusher never stops silently. A batch the database refuses for good, or that fails in a way
agts did not foresee, is kept in the spool's ``failed/`` folder for a person (a refusal caused by
some rows is narrowed down by splitting the batch, so only the refused rows are kept there); an
unreadable spool file is moved there too. Every such event counts in :meth:`Ingestor.stats`
(``errors``, ``failed_batches``, ``last_error``). Points that could be neither stored, spooled nor
kept (``points_lost``) make the next :meth:`Ingestor.flush` or :meth:`Ingestor.close` raise.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, get_args

import polars as pl

from agts.config import BackpressurePolicy, IngestionConfig
from agts.errors import BackpressureError, SpoolFullError, StorageError, ValidationError
from agts.ingest._normalize import Normalized, normalize
from agts.ingest._rows import PointRows, as_normalized, empty_skipped_points, point_rows
from agts.ingest._spool import Spool
from agts.ingest._types import MetricPoint, OnError
from agts.ingest._writer import MetricsWriter

__all__ = ["IngestStats", "Ingestor"]

_UNAVAILABLE = object()  # _attempt: the database did not answer


def _child_id(batch_id: str, half: str) -> str:
    """The id of one half of a split batch: derived, so a replay of the batch finds it."""
    return str(uuid.uuid5(uuid.UUID(batch_id), half))

log = logging.getLogger(__name__)

_ATTEMPTS = 3          # writes per batch before it is spooled
_BACKOFF = 0.1         # first pause between attempts (doubles)
_MAX_OUTAGE_PAUSE = 5.0
#: Halvings of one refused batch while narrowing down the refused rows: enough for every row of
#: a batch of up to this many points, so only a large batch of mostly refused rows keeps good
#: rows in failed/ (each halving costs a refused write, a round trip).
_MAX_SPLITS = 4096
#: SQLSTATE classes of refusals caused by some rows' values (data exception, integrity constraint,
#: program limit such as an index row size): worth splitting the batch to keep the other rows.
_ROW_CLASSES = ("22", "23", "54")
#: ``query_canceled``: a statement timeout. Retrying the same batch times out again, so it is
#: halved (smaller COPYs finish in time), up to :data:`_TIMEOUT_SPLITS` times; what still times out
#: is spooled like a batch the database did not take (a lock held elsewhere, a busy server).
_TIMED_OUT = "57014"
_TIMEOUT_SPLITS = 3


@dataclass(frozen=True)
class IngestStats:
    """A snapshot of an :class:`Ingestor`'s counters (see :meth:`Ingestor.stats`).

    ``failed_batches`` counts what was kept in the spool's ``failed/`` folder (batches or parts of
    batches the database refused for good, and spool files that could not be read back);
    ``points_lost`` counts accepted points that could not be stored, spooled nor kept there (each
    also makes :meth:`Ingestor.flush` or :meth:`Ingestor.close` raise).
    """

    points_accepted: int
    points_written: int
    duplicates: int
    points_dropped: int
    batches_written: int
    bytes_written: int
    buffer_depth: int
    retries: int
    spooled_batches: int
    spool_pending: int
    spool_bytes: int
    replayed_batches: int
    failed_batches: int
    points_lost: int
    errors: int
    last_error: str | None
    lag_seconds: float
    points_per_second: float
    uptime_seconds: float

    def as_points(
        self, *, prefix: str = "agts_ingest_", labels: dict[str, str] | None = None
    ) -> list[MetricPoint]:
        """The numeric counters as metric points (``agts_ingest_points_written`` ...), to store
        with the metrics they describe."""
        now = dt.datetime.now(dt.UTC)
        return [
            MetricPoint(now, prefix + f.name, float(getattr(self, f.name)), dict(labels or {}))
            for f in fields(self) if f.name != "last_error"
        ]


class Ingestor:
    """Buffered, backpressured, idempotent ingest of metric points. Build with
    :meth:`agts.StorageEngine.ingestor`; use as a (async) context manager or call :meth:`close`.

    Raises
    ------
    ValidationError
        ``on_error`` or the backpressure policy is not one of the allowed values.
    StorageError
        The spool directory cannot be created or written, or is in use by another ingestor.
    """

    def __init__(
        self, writer: MetricsWriter, settings: IngestionConfig, *, spool_dir: str,
        on_error: OnError = "raise",
    ) -> None:
        if on_error not in get_args(OnError):
            raise ValidationError(
                f"on_error must be one of {get_args(OnError)!r}, got {on_error!r}")
        if settings.backpressure not in get_args(BackpressurePolicy):
            raise ValidationError(f"backpressure must be one of {get_args(BackpressurePolicy)!r}, "
                                  f"got {settings.backpressure!r}")
        self.settings = settings
        self.on_error: OnError = on_error
        self._writer = writer
        self._spool = Spool(spool_dir, max_bytes=settings.spool_max_bytes)
        self._cond = threading.Condition()
        self._pending: deque[tuple[Normalized | PointRows, float]] = deque()
        self._pending_points = 0
        self._buffered = 0              # pending + in flight
        self._accepted = 0
        self._done = 0                  # written, spooled or dropped
        self._closing = False
        self._closed = False
        self._flush_to = 0
        self._spool_full = False
        self._next_attempt = 0.0        # monotonic time before which the database is not tried
        self._outage_pause = _BACKOFF
        self._c: dict[str, Any] = {k: 0 for k in (
            "points_written", "duplicates", "points_dropped", "batches_written", "bytes_written",
            "retries", "spooled_batches", "replayed_batches", "failed_batches", "points_lost",
            "errors")}
        self._c.update(last_error=None, lag_seconds=0.0)
        self._lost_reported = 0         # points_lost already raised by flush/close
        self._stopped: str | None = None  # why the flusher thread ended early
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="agts-ingest-flusher", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (f"Ingestor(buffered={self._buffered}, spooled={len(self._spool)}, "
                f"policy={self.settings.backpressure!r})")

    # -- producers -----------------------------------------------------------------------------

    def put(self, data: Any, *, timeout: float | None = None) -> pl.DataFrame:
        """Validate and buffer points; returns the rows refused (``on_error="skip"``).

        Parameters
        ----------
        data
            A :class:`MetricPoint`, a list of them, or a frame/table in any form
            ``insert_metrics_batch`` takes.
        timeout
            With the ``"block"`` policy: seconds to wait for room (default
            ``ingestion.backpressure_timeout_sec``).

        Raises
        ------
        ValidationError
            Invalid input (``on_error="raise"``); nothing of it was buffered.
        BackpressureError
            The buffer is full (policy ``"raise"``, or the wait timed out).
        SpoolFullError
            The buffer is full because the database is away and the spool is full.
        """
        rows = point_rows(data)
        batch: Normalized | PointRows
        if rows is not None:  # plainly valid MetricPoints: microseconds, not milliseconds
            batch, skipped = rows, empty_skipped_points()
        else:
            checked = normalize(data, on_error=self.on_error)
            batch, skipped = Normalized(checked.points, checked.series), checked.skipped
        limit = self.settings.max_buffer_size
        wait = self.settings.backpressure_timeout_sec if timeout is None else timeout
        deadline = time.monotonic() + wait
        offset = 0
        with self._cond:
            if self._closing:
                raise StorageError("the ingestor is closed")
            if self._stopped is not None:
                raise StorageError(f"the ingestor's flusher stopped ({self._stopped}); "
                                   "nothing more is accepted")
            while offset < batch.height:
                part = batch.slice(offset, limit) if offset or batch.height > limit else batch
                self._reserve(part.height, deadline, accepted=offset, total=batch.height)
                tail = self._pending[-1][0] if self._pending else None
                if isinstance(part, PointRows) and isinstance(tail, PointRows):
                    tail.extend(part)  # one growing part, not one part per point
                else:
                    self._pending.append((part, time.monotonic()))
                self._pending_points += part.height
                self._buffered += part.height
                self._accepted += part.height
                offset += part.height
                if self._pending_points >= self.settings.batch_size:
                    self._cond.notify_all()
        return skipped

    async def aput(self, data: Any, *, timeout: float | None = None) -> pl.DataFrame:
        """:meth:`put` for asyncio: waits for room in a worker thread, never in the event loop."""
        with self._cond:
            room = self.settings.max_buffer_size - self._buffered
        size = len(data) if isinstance(data, list) else 1 if isinstance(data, MetricPoint) else None
        if size is not None and size <= room:
            try:
                return self.put(data, timeout=0)
            except BackpressureError:
                # Other producers took the room since it was looked at. The points fit in one
                # part, so none of them was accepted: wait for room in a thread like any put.
                if self.settings.backpressure != "block":
                    raise
        return await asyncio.to_thread(self.put, data, timeout=timeout)

    def _reserve(self, n: int, deadline: float, *, accepted: int, total: int) -> None:
        limit = self.settings.max_buffer_size
        policy = self.settings.backpressure
        while self._buffered + n > limit:
            if policy == "drop_oldest" and self._pending:
                self._drop_oldest(self._buffered + n - limit)
                continue
            remaining = deadline - time.monotonic()
            if policy == "raise" or remaining <= 0:
                cls = SpoolFullError if self._spool_full else BackpressureError
                cause = "the database is unavailable and the spool is full; " if (
                    self._spool_full) else ""
                raise cls(
                    f"ingest buffer is full ({self._buffered} of {limit} points; "
                    f"{cause}policy {policy!r}); {accepted} of {total} points of this put "
                    "were accepted"
                )
            self._cond.wait(remaining)

    def _drop_oldest(self, excess: int) -> None:
        part, enqueued = self._pending.popleft()
        if part.height > excess:
            self._pending.appendleft((part.slice(excess), enqueued))
            dropped = excess
        else:
            dropped = part.height
        self._pending_points -= dropped
        self._buffered -= dropped
        self._done += dropped
        self._c["points_dropped"] += dropped

    # -- flushing and closing --------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every point put so far is stored, spooled, kept in ``failed/`` or
        (``drop_oldest``) dropped.

        Raises
        ------
        BackpressureError
            ``timeout`` seconds passed first.
        StorageError
            Accepted points could be neither stored, spooled nor kept (``stats().points_lost``;
            the message says why), or the flusher stopped.
        """
        with self._cond:
            target = self._accepted
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._done >= target, timeout):
                raise BackpressureError(
                    f"flush timed out after {timeout!r}s with {self._buffered} points buffered")
            self._raise_lost()

    def _raise_lost(self) -> None:
        lost = self._c["points_lost"] - self._lost_reported
        if lost:
            self._lost_reported = self._c["points_lost"]
            raise StorageError(
                f"{lost} accepted points could not be stored, spooled or kept in "
                f"{str(self._spool.directory / 'failed')!r}: {self._c['last_error']}")

    async def aflush(self, timeout: float | None = None) -> None:
        """:meth:`flush` for asyncio."""
        await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush everything, replay what the spool holds if the database answers, stop the
        flusher. What cannot be written stays in the spool for the next ingestor. Safe to call
        twice.

        Raises
        ------
        BackpressureError
            ``timeout`` seconds passed first.
        StorageError
            As :meth:`flush`: accepted points were lost (the ingestor is closed all the same).
        """
        if self._closed:
            return
        with self._cond:
            self._closing = True
            self._flush_to = self._accepted
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BackpressureError(f"close timed out after {timeout!r}s; points still buffered")
        self._closed = True
        self._spool.close()
        with self._cond:
            self._raise_lost()

    async def aclose(self) -> None:
        """:meth:`close` for asyncio."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Ingestor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    def stats(self) -> IngestStats:
        """The counters now."""
        with self._cond:
            c = dict(self._c)
            uptime = time.monotonic() - self._started
            return IngestStats(
                points_accepted=self._accepted, buffer_depth=self._buffered,
                spool_pending=len(self._spool), spool_bytes=self._spool.bytes,
                points_per_second=c["points_written"] / uptime if uptime > 0 else 0.0,
                uptime_seconds=uptime, **c,
            )

    # -- the flusher thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # the thread must never end without saying so
            self._stop(exc)

    def _loop(self) -> None:
        interval = self.settings.flush_interval_ms / 1000
        while True:
            with self._cond:
                while True:
                    due = self._pending_points >= self.settings.batch_size or (
                        self._pending and (self._closing or self._flush_to > self._done
                                           or time.monotonic() - self._pending[0][1] >= interval))
                    if due:
                        break
                    if self._closing and not self._pending:
                        break
                    if len(self._spool) and time.monotonic() >= self._next_attempt:
                        break
                    wait = interval
                    if self._pending:
                        wait = max(0.0, interval - (time.monotonic() - self._pending[0][1]))
                    if len(self._spool):
                        wait = min(wait, max(0.01, self._next_attempt - time.monotonic()))
                    self._cond.wait(wait)
                parts, enqueued = self._take() if self._pending else ([], 0.0)
            if parts:
                self._guarded_replay()
                self._deliver_parts(parts, enqueued)  # outside the lock: puts go on
            elif self._closing:
                # Closing: a few last tries of the spool, whatever the outage backoff says.
                for _ in range(3):
                    self._guarded_replay(force=True)
                    if not len(self._spool):
                        break
                    time.sleep(_BACKOFF)
                return
            else:
                self._guarded_replay()

    def _deliver_parts(self, parts: list[Normalized | PointRows], enqueued: float) -> None:
        height = sum(p.height for p in parts)
        try:
            batch = as_normalized(parts)
        except Exception as exc:
            self._note(exc, "cannot build a batch of %d points", height)
            self._lose(height)
            return
        try:
            self._deliver(batch, enqueued)
        except Exception as exc:
            # Neither stored nor spooled: keep it for a person rather than lose it.
            self._note(exc, "batch of %d points could not be stored or spooled", height)
            self._keep(batch, str(uuid.uuid4()), exc)
            self._release(height)

    def _guarded_replay(self, *, force: bool = False) -> None:
        try:
            self._replay(force=force)
        except Exception as exc:
            self._note(exc, "replaying the spool failed")
            self._next_attempt = time.monotonic() + self._outage_pause
            self._outage_pause = min(self._outage_pause * 2, _MAX_OUTAGE_PAUSE)

    def _note(self, exc: BaseException, message: str, *args: Any) -> None:
        """Count and log an error the flusher survives."""
        with self._cond:
            self._c["errors"] += 1
            self._c["last_error"] = f"{type(exc).__name__}: {exc}"
        log.error(message + ": %s", *args, exc, exc_info=not isinstance(exc, StorageError))

    def _lose(self, n: int) -> None:
        with self._cond:
            self._c["points_lost"] += n
        log.error("%d accepted points are lost", n)
        self._release(n)

    def _stop(self, exc: BaseException) -> None:
        """The flusher is ending on an error: spool what is pending, count what cannot be."""
        log.critical("the ingest flusher stopped: %s", exc, exc_info=exc)
        with self._cond:
            self._stopped = f"{type(exc).__name__}: {exc}"
            self._c["errors"] += 1
            self._c["last_error"] = self._stopped
            parts = [part for part, _ in self._pending]
            self._pending.clear()
            self._pending_points = 0
        pending = sum(p.height for p in parts)
        if parts:
            try:
                self._spool.append(as_normalized(parts), str(uuid.uuid4()))
                with self._cond:
                    self._c["spooled_batches"] += 1
                pending = 0
            except Exception:
                log.exception("cannot spool the %d pending points", pending)
        with self._cond:
            in_flight = self._buffered - sum(p.height for p in parts)
            self._c["points_lost"] += in_flight + pending
            self._done += self._buffered
            self._buffered = 0
            self._cond.notify_all()

    def _take(self) -> tuple[list[Normalized | PointRows], float]:
        size = self.settings.batch_size
        parts: list[Normalized | PointRows] = []
        taken = 0
        enqueued = self._pending[0][1]
        while self._pending and taken < size:
            part, when = self._pending.popleft()
            if taken + part.height > size:
                self._pending.appendleft((part.slice(size - taken), when))
                part = part.slice(0, size - taken)
            parts.append(part)
            taken += part.height
        self._pending_points -= taken
        return parts, enqueued

    def _release(self, n: int) -> None:
        with self._cond:
            self._buffered -= n
            self._done += n
            self._cond.notify_all()

    def _deliver(self, batch: Normalized, enqueued: float) -> None:
        batch_id = str(uuid.uuid4())
        try_database = not len(self._spool) and time.monotonic() >= self._next_attempt
        while True:
            if try_database and self._write(batch, batch_id, enqueued):
                with self._cond:
                    self._spool_full = False
                self._release(batch.height)
                return
            try:
                self._spool.append(batch, batch_id)
                break
            except SpoolFullError as exc:
                # Keep the batch in memory (its buffer room stays taken: producers feel it) and
                # try the spool's oldest batches, then this one, until the database answers.
                with self._cond:
                    self._spool_full = True
                    self._c["last_error"] = str(exc)
                    self._cond.notify_all()
                log.warning("%s", exc)
                time.sleep(min(self._outage_pause, _MAX_OUTAGE_PAUSE))
                self._replay(force=True)
                try_database = not len(self._spool)
        with self._cond:
            self._spool_full = False
            self._c["spooled_batches"] += 1
        log.info("spooled batch %s (%d points)", batch_id, batch.height)
        self._release(batch.height)

    def _write(self, batch: Normalized, batch_id: str, enqueued: float) -> bool:
        """Store ``batch``; False when the database stays unavailable (the caller spools it).

        A batch refused for good is kept in the spool's ``failed/``. When the refusal comes from
        some rows' values, the batch is halved (each half under an id derived from the batch's,
        so a replay is recognized) until the refused rows are found: the others are stored.
        """
        parts = [(batch, batch_id)]
        splits = timeouts = 0
        while parts:
            part, part_id = parts.pop()
            refusal = self._attempt(part, part_id, enqueued)
            if refusal is None:
                continue
            if refusal is _UNAVAILABLE:
                return False  # points of parts already stored are skipped on replay, by key
            assert isinstance(refusal, BaseException)
            state = getattr(refusal, "sqlstate", None) or ""
            if state == _TIMED_OUT:
                timeouts += 1
                if part.height == 1 or timeouts > _TIMEOUT_SPLITS:
                    return False  # spooled: replayed when the database is quicker
            if part.height > 1 and splits < _MAX_SPLITS and (
                    state[:2] in _ROW_CLASSES or state == _TIMED_OUT):
                splits += 1
                half = part.height // 2
                parts.append((part.slice(half), _child_id(part_id, "b")))
                parts.append((part.slice(0, half), _child_id(part_id, "a")))
                continue
            with self._cond:
                self._c["errors"] += 1
                self._c["last_error"] = str(refusal)
            self._keep(part, part_id, refusal)
        return True

    def _attempt(self, batch: Normalized, batch_id: str,
                 enqueued: float) -> BaseException | object | None:
        """One write with retries of transient failures: None when stored, the refusal, or
        ``_UNAVAILABLE``."""
        pause = _BACKOFF
        for attempt in range(_ATTEMPTS):
            try:
                outcome = self._writer.write(batch, batch_id=batch_id)
            except StorageError as exc:
                if exc.sqlstate == _TIMED_OUT and batch.height > 1:
                    with self._cond:  # not the data's fault: said, and the batch is halved
                        self._c["last_error"] = str(exc)
                        self._c["errors"] += 1
                    return exc
                if not exc.transient:
                    return exc
                with self._cond:
                    self._c["last_error"] = str(exc)
                    self._c["errors"] += 1
                if attempt + 1 < _ATTEMPTS:
                    with self._cond:
                        self._c["retries"] += 1
                    time.sleep(pause)
                    pause *= 2
                continue
            except Exception as exc:  # not foreseen: never retried in a loop, kept for a person
                log.exception("writing batch %s failed unexpectedly", batch_id)
                return exc
            self._outage_pause = _BACKOFF
            self._next_attempt = 0.0
            with self._cond:
                c = self._c
                c["points_written"] += outcome.rows_written
                c["duplicates"] += outcome.duplicates
                c["batches_written"] += 1
                c["bytes_written"] += outcome.nbytes
                c["lag_seconds"] = time.monotonic() - enqueued
            return None
        self._next_attempt = time.monotonic() + self._outage_pause
        self._outage_pause = min(self._outage_pause * 2, _MAX_OUTAGE_PAUSE)
        return _UNAVAILABLE

    def _keep(self, batch: Normalized, batch_id: str, reason: BaseException) -> None:
        """Set a batch aside in ``failed/``; count it as lost if even that fails."""
        try:
            path = self._spool.set_aside(batch, batch_id)
        except Exception as exc:
            with self._cond:
                self._c["points_lost"] += batch.height
                self._c["last_error"] = (f"{reason}; and it could not be kept in failed/: "
                                         f"{type(exc).__name__}: {exc}")
            log.error("batch %s (%d points) refused (%s) and not kept: %s", batch_id,
                      batch.height, reason, exc)
            return
        with self._cond:
            self._c["failed_batches"] += 1
        log.error("batch %s (%d points) refused, kept in %s: %s", batch_id, batch.height, path,
                  reason)

    def _replay(self, *, force: bool = False) -> None:
        """Write spooled batches, oldest first, while the database takes them."""
        if not len(self._spool) or (not force and time.monotonic() < self._next_attempt):
            return
        while len(self._spool):
            moved, stuck = self._spool.unreadable, self._spool.unmovable
            oldest = self._spool.oldest()
            moved, stuck = self._spool.unreadable - moved, self._spool.unmovable - stuck
            if moved or stuck:
                with self._cond:
                    self._c["errors"] += moved + stuck
                    self._c["failed_batches"] += moved
                    self._c["last_error"] = self._spool.unreadable_reason
            if oldest is None:  # the rest could not be read and was moved to failed/
                return
            path, batch, batch_id = oldest
            if not self._write(batch, batch_id, time.monotonic()):
                return
            self._spool.remove(path)
            with self._cond:
                self._c["replayed_batches"] += 1
                self._cond.notify_all()
            log.info("replayed spooled batch %s (%d points)", batch_id, batch.height)
