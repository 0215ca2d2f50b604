"""Spark (pyspark, local mode) reads an archived table's current Iceberg snapshot and gets exactly
the rows agts returns.

Spark attaches to agts' catalog on a cluster through Iceberg's JDBC catalog (README, "Apache
Iceberg"), which needs the iceberg-spark-runtime jar from Maven Central; this machine reaches only
PyPI, Debian and npm. So here Spark reads the data files of the current snapshot, as pyiceberg
lists them from the table's metadata, with its own Parquet reader: the files, their layout (the
labels map, UTC timestamps, series ids) and the snapshot's file set are what a cluster reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import agts

pyspark = pytest.importorskip("pyspark", reason="pyspark is in the test extras (pip install .[test])")

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None:
        pytest.skip("Spark needs a Java runtime (java on PATH)")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("agts-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _points() -> pl.DataFrame:
    rows = []
    for i in range(2 * 96):
        for metric in ("latency", "pnl"):
            for venue in ("x", "y"):
                rows.append((DAY0 + i * DAY / 96, metric, i * 1.5 + (venue == "x"), venue))
    return pl.DataFrame(rows, orient="row", schema={
        "timestamp": pl.Datetime("us", "UTC"), "metric_name": pl.String, "value": pl.Float64,
        "venue": pl.String}).with_columns(labels=pl.struct("venue")).drop("venue")


def test_spark_reads_the_current_snapshot_and_gets_the_rows_agts_returns(
        arch: agts.StorageEngine, spark: Any) -> None:
    points = _points()
    arch.insert_metrics_batch(points)
    arch.archive("metrics", DAY0, DAY0 + DAY, drop=True)  # day one: only in the cold tier
    arch.export_cold("metrics", DAY0 + DAY, DAY0 + 2 * DAY)  # day two: hot, and copied
    table = arch.iceberg_table("metrics")
    files = sorted(task.file.file_path for task in table.scan().plan_files())
    assert len(files) == 2
    frame = spark.read.parquet(*files)
    frame.createOrReplaceTempView("metrics")
    got = pl.from_arrow(spark.sql(
        "SELECT timestamp, metric_name, value, labels['venue'] AS venue, series_id FROM metrics "
        "WHERE metric_name = 'pnl' AND labels['venue'] = 'x' ORDER BY timestamp").toArrow())
    assert isinstance(got, pl.DataFrame)
    got = got.with_columns(pl.col("timestamp").dt.convert_time_zone("UTC").dt.cast_time_unit("us"))
    # agts, both tiers: the same points, the same series ids
    ours = arch.query_metrics("pnl", DAY0, DAY0 + 2 * DAY, {"venue": "x"}, tiers="all")
    assert_frame_equal(
        got, ours.select("timestamp", "metric_name", "value",
                         pl.col("labels").struct.field("venue").alias("venue"), "series_id"),
        check_dtypes=False)
    assert got.height == 2 * 96
    # and the whole snapshot, as agts' own scan of it reads it
    counts = dict(spark.sql("SELECT metric_name, count(*) FROM metrics GROUP BY 1").collect())
    scanned = arch.scan_cold("metrics").group_by("metric_name").len().collect()
    assert counts == dict(scanned.iter_rows()) == {"latency": 2 * 96 * 2, "pnl": 2 * 96 * 2}
