"""The cold tier on S3-compatible storage: moto's server mode on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pytest

import agts
from agts.config import StorageConfig

pytest.importorskip("moto")

DAY0 = datetime(2026, 2, 1, tzinfo=UTC)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(config: StorageConfig, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
       tmp_path: Path) -> Iterator[agts.StorageEngine]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    bucket = f"agts-{tmp_path.name.lower().replace('_', '-')[:40]}"
    fs = pafs.S3FileSystem(endpoint_override=s3_endpoint.split("://")[1], scheme="http",
                           region="us-east-1", allow_bucket_creation=True)
    fs.create_dir(bucket)
    cfg = config.with_overrides(archive={"root": f"s3://{bucket}/cold", "s3_endpoint": s3_endpoint,
                                         "s3_region": "us-east-1"})
    with agts.connect(cfg) as eng:
        yield eng


def test_s3_export_verify_drop_query_restore(s3: agts.StorageEngine) -> None:
    n = 2 * 480
    points = pl.DataFrame({
        "timestamp": pl.datetime_range(DAY0, DAY0 + timedelta(days=2), "3m", eager=True,
                                       time_zone="UTC", closed="left"),
        "metric_name": ["fill_rate"] * n,
        "value": [float(i) for i in range(n)],
        "labels": [{"venue": "a"}] * n,
    })
    s3.insert_metrics_batch(points)
    report = s3.archive("metrics", DAY0, DAY0 + timedelta(days=2), drop=True)
    assert (report.units_dropped, report.rows_dropped) == (2, n)
    cold = s3.query_cold("metrics", DAY0, DAY0 + timedelta(days=2), metric_name="fill_rate")
    assert cold["value"].to_list() == points["value"].to_list()
    assert cold["timestamp"].to_list() == points["timestamp"].to_list()
    with s3.cold() as duck:
        assert duck.execute("SELECT count(*), sum(value) FROM metrics").fetchone() == (
            n, float(sum(range(n))))
    lazy = s3.scan_cold("metrics")
    assert lazy.select(pl.len()).collect().item() == n
    files = s3.iceberg_table("metrics").inspect.files()["file_path"].to_pylist()
    assert len(files) == 2 and all(f.startswith("s3://") for f in files)
    assert s3.restore("metrics", DAY0, DAY0 + timedelta(days=2)) == n
    assert s3.query_metrics("fill_rate", DAY0, DAY0 + timedelta(days=2)).height == n
    assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
