"""The database server stopped (fast shutdown) and started again while an ingestor is writing:
every acknowledged point is stored exactly once, without the producer noticing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import agts
from tests.reliability._data import check_exactly_once, seq_points
from tests.reliability.conftest import Cluster, Record, idle_in_transaction, stored, wait_for

pytestmark = pytest.mark.slow


def test_server_restart_mid_ingest_loses_and_duplicates_nothing(
    cluster: Cluster, tmp_path: Path, record: Record
) -> None:
    cfg = cluster.config()
    with agts.connect(cfg) as engine:
        ing = engine.ingestor(batch_size=500, flush_interval_ms=20, spool_dir=tmp_path / "spool")
        acked = 0
        failures: list[BaseException] = []
        stop = threading.Event()

        def produce() -> None:
            nonlocal acked
            try:
                while not stop.is_set():
                    ing.put(seq_points(acked, acked + 100))
                    acked += 100  # put returned: acknowledged
                    time.sleep(0.002)
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        producer = threading.Thread(target=produce)
        producer.start()
        try:
            wait_for(lambda: ing.stats().points_written >= 3000, 30, "points written before the fault")
            cluster.stop()                                   # the fault: the server goes away
            wait_for(lambda: ing.stats().spooled_batches >= 2, 30, "batches spooled in the outage")
            during = ing.stats()
            cluster.start()                                  # ... and comes back
            wait_for(lambda: ing.stats().replayed_batches >= during.spooled_batches, 60,
                     "the spool replayed after the restart")
        finally:
            stop.set()
            producer.join()
        ing.close(timeout=60)
        stats = ing.stats()
        assert failures == [], "the producer saw an error during the outage"
        assert stats.spool_pending == 0 and stats.buffer_depth == 0
        assert stats.points_written == stats.points_accepted == acked
        rows = check_exactly_once(stored(engine), range(acked))
        assert rows == acked
        assert list((tmp_path / "spool").glob("*.arrow")) == []
        assert idle_in_transaction(cfg) == []
        record("server stopped and restarted mid-ingest", rows_checked=rows, acknowledged=acked,
               spooled_batches=stats.spooled_batches, replayed_batches=stats.replayed_batches,
               retries=stats.retries, duplicates=0, lost=0)
