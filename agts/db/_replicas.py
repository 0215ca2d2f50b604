"""Read replicas: which server answers a read.

``database.replicas`` lists streaming replicas of the primary. :class:`Replicas` keeps, for each,
whether it is up and how far behind it is, and orders the ones fit to serve a read (up, in
recovery, lag within ``database.replica_max_lag_sec``) by ``database.replica_choice``.
:class:`~agts.db.Database` routes the reads of one query to one of them and falls back to the
primary; nothing here decides *what* may read a replica (the query services do).

Lag is measured without trusting clocks alone. Each check reads the primary's WAL insert position
and keeps it with the time it was read; a replica that has replayed past the position read at time
``t`` holds every transaction committed before ``t``, so its lag is at most ``now - t`` (0 when it
has replayed everything the primary had). ``now() - pg_last_xact_replay_timestamp()`` on the
replica is a second upper bound (tight under steady writes, loose after an idle spell); the
smaller of the two is reported. Checks run at most every ``replica_check_interval_sec``, in the
thread of a read that finds the last one too old.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from agts._dsn import parse_dsn
from agts.config import DatabaseConfig
from agts.errors import ConnectError, StorageError

if TYPE_CHECKING:
    from agts.db._database import Database

__all__ = ["Replica", "ReplicaState", "Replicas", "lsn", "replica_config", "try_elsewhere"]

State = Literal["ok", "lagging", "down", "not a replica", "unchecked"]

# A replica that failed is tried again after this long, doubling up to the cap.
_RETRY_SEC, _RETRY_MAX_SEC = 1.0, 30.0


def lsn(text: str) -> int:
    """A ``pg_lsn`` (``16/B374D848``) as an integer, to compare and subtract."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def replica_config(primary: DatabaseConfig, entry: str, index: int) -> DatabaseConfig:
    """The configuration of replica ``entry`` (``host``, ``host:port`` or a DSN): what it does
    not set (database, user, password, TLS, options) is the primary's."""
    what = f"database.replicas[{index}]"
    text = entry.strip()
    if "=" in text or "://" in text:
        params = parse_dsn(text, what=what)
    else:
        host, colon, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        params = {"host": host or text}
        if colon:
            params["port"] = port
    merged = parse_dsn(primary.dsn) if primary.dsn else {}
    merged.update(params)
    from psycopg.conninfo import make_conninfo

    return replace(primary, replicas=(), dsn=make_conninfo(**merged))


@dataclass(frozen=True)
class ReplicaState:
    """One replica as the last check saw it.

    Attributes
    ----------
    replica : str
        ``user@host:port/database``.
    state : {"ok", "lagging", "down", "not a replica", "unchecked"}
        ``ok``: serves reads. ``lagging``: its lag exceeds ``replica_max_lag_sec``. ``down``:
        it could not be reached or failed a read (tried again later). ``not a replica``: it is
        not in recovery (promoted, or a primary listed by mistake): never read.
    lag_sec : float or None
        At most this many seconds behind the primary (None when unknown).
    replay_lsn : str or None
        The WAL position it has replayed.
    checked_at : datetime or None
        When (UTC).
    error : str or None
        Why it is down.
    """

    replica: str
    state: State
    lag_sec: float | None
    replay_lsn: str | None
    checked_at: datetime | None
    error: str | None


class Replica:
    """A replica's pools (opened at first use) and its last known state."""

    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self.name = config.describe()
        self._db: Database | None = None
        self.state: State = "unchecked"
        self.lag_sec: float | None = None
        self.replay_lsn: str | None = None
        self.checked_at: datetime | None = None
        self.error: str | None = None
        self.retry_at = 0.0
        self._backoff = _RETRY_SEC

    def database(self) -> Database:
        if self._db is None:
            from agts.db._database import Database

            self._db = Database(self.config)
        return self._db

    def failed(self, error: StorageError | str) -> None:
        self.state, self.error = "down", str(error)
        self.retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, _RETRY_MAX_SEC)
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def replayed(self, position: int) -> bool:
        """Whether it has replayed the primary's WAL up to ``position`` (one round trip)."""
        with self.database().connection(f"check replica {self.name}") as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
        return bool(row and row[0] and lsn(str(row[0])) >= position)

    def snapshot(self) -> ReplicaState:
        return ReplicaState(self.name, self.state, self.lag_sec, self.replay_lsn, self.checked_at,
                            self.error)

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


class Replicas:
    """The replicas of a primary, checked at most every ``replica_check_interval_sec``."""

    def __init__(self, primary: Database, config: DatabaseConfig) -> None:
        self._primary = primary
        self.max_lag_sec = config.replica_max_lag_sec
        self.choice = config.replica_choice
        self.interval_sec = config.replica_check_interval_sec
        self.replicas = [Replica(replica_config(config, entry, i))
                         for i, entry in enumerate(config.replicas)]
        self._samples: deque[tuple[float, int]] = deque()
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._turn = itertools.count()

    def close(self) -> None:
        for replica in self.replicas:
            replica.close()

    def failed(self, target: Database, exc: StorageError) -> None:
        for replica in self.replicas:
            if replica._db is target:
                replica.failed(exc)

    # -- choosing ------------------------------------------------------------------------------

    def candidates(self) -> list[Replica]:
        """The replicas fit to serve a read now, in the order to try them."""
        if time.monotonic() - self._checked >= self.interval_sec:
            self.check(wait=False)
        fit = [r for r in self.replicas if r.state == "ok"]
        if self.choice == "least_lag":
            return sorted(fit, key=lambda r: r.lag_sec or 0.0)
        if not fit:
            return fit
        start = next(self._turn) % len(fit)
        return fit[start:] + fit[:start]

    def primary_position(self) -> int:
        """The primary's WAL insert position now."""
        with self._primary.connection("read the primary's WAL position") as conn:
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        return lsn(str(row[0]))

    # -- checking ------------------------------------------------------------------------------

    def check(self, *, wait: bool = True) -> list[ReplicaState]:
        """Check every replica now (``wait=False``: unless another thread is checking)."""
        if not self._lock.acquire(blocking=wait):
            return [r.snapshot() for r in self.replicas]
        try:
            position = self.primary_position()
            now = time.monotonic()
            self._samples.append((now, position))
            horizon = now - max(60.0, 4 * self.max_lag_sec)
            while len(self._samples) > 1 and self._samples[0][0] < horizon:
                self._samples.popleft()
            for replica in self.replicas:
                self._check_one(replica, position, now)
            self._checked = time.monotonic()
            return [r.snapshot() for r in self.replicas]
        finally:
            self._lock.release()

    def _check_one(self, replica: Replica, position: int, now: float) -> None:
        if replica.state == "down" and now < replica.retry_at:
            return
        try:
            with replica.database().connection(f"check replica {replica.name}") as conn:
                row = conn.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
                    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8"
                ).fetchone()
        except StorageError as exc:
            replica.failed(exc)
            replica.checked_at = datetime.now(UTC)
            return
        assert row is not None
        in_recovery, replayed, since_replay = row
        replica.checked_at = datetime.now(UTC)
        replica.error = None
        replica._backoff = _RETRY_SEC
        if not in_recovery:
            replica.state, replica.lag_sec, replica.replay_lsn = "not a replica", None, None
            return
        replica.replay_lsn = str(replayed) if replayed is not None else None
        replica.lag_sec = self._lag(lsn(str(replayed)) if replayed else 0, position, now,
                                    since_replay)
        fit = replica.lag_sec is not None and replica.lag_sec <= self.max_lag_sec
        replica.state = "ok" if fit else "lagging"

    def _lag(self, replayed: int, position: int, now: float,
             since_replay: float | None) -> float | None:
        if replayed >= position:
            return 0.0
        bounds = [max(0.0, float(since_replay))] if since_replay is not None else []
        covered = [t for t, p in self._samples if p <= replayed]
        if covered:
            bounds.append(now - max(covered))
        return min(bounds) if bounds else None


def try_elsewhere(exc: StorageError) -> bool:
    """Whether a read that failed on a replica is tried on the next server: the replica is gone,
    or cancelled the statement for a conflict with recovery (SQLSTATE 40001 on a standby)."""
    return isinstance(exc, ConnectError) or exc.sqlstate == "40001"
