"""The CLI never prints a traceback: every failure a new user meets is one line ``agts: error:
...`` with a documented exit code (1 the work failed, 2 usage, 3 unreachable, 141 stdout closed
early), run as a user runs it: subprocesses, a real database, real files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import psycopg
import pytest

import agts
from agts.db import conninfo
from tests.test_cli import run_cli

START = datetime(2026, 3, 2, tzinfo=UTC)
ROWS = 7_850  # the size of the report in the issue
ISO = "2026-03-02T00:00:00.000000+00:00"


def assert_error(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """Exit ``code``, and stderr is exactly one line ``agts: error: ...`` containing ``message``."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agts: error: "), result.stderr
    assert message in lines[0], result.stderr


def _env(config: agts.StorageConfig | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGTS_")}
    if config is not None:
        env["AGTS_DSN"] = conninfo(config.database)
    return env


@pytest.fixture
def loaded(config: agts.StorageConfig) -> agts.StorageConfig:
    """``latency_ms``: 7,850 points, one a second, in two series (venue binance / okx)."""
    frame = pl.DataFrame({
        "timestamp": [START + timedelta(seconds=i) for i in range(ROWS)],
        "metric_name": "latency_ms", "value": [float(i) for i in range(ROWS)],
        "labels": [f'{{"venue": "{"okx" if i % 2 else "binance"}"}}' for i in range(ROWS)]})
    with agts.connect(config) as engine:
        assert engine.insert_metrics_batch(frame).rows_written == ROWS
    return config


QUERY = ("query", "latency_ms", "--start", "2026-03-02", "--end", "2026-03-03")


# -- stdout closed early ---------------------------------------------------------------------


@pytest.fixture
def big(config: agts.StorageConfig) -> agts.StorageConfig:
    """``depth``: 40,000 points (a few MB of text, far more than a pipe holds)."""
    frame = pl.DataFrame({
        "timestamp": [START + timedelta(seconds=i) for i in range(40_000)],
        "metric_name": "depth", "value": [float(i) for i in range(40_000)],
        "labels": '{"venue": "okx"}'})
    with agts.connect(config) as engine:
        assert engine.insert_metrics_batch(frame).rows_written == 40_000
    return config


@pytest.mark.parametrize("fmt", [["--json"], ["--format", "csv"]], ids=["json", "csv"])
def test_a_pipe_into_head_stops_quietly(big: agts.StorageConfig, fmt: list[str]) -> None:
    env = {**_env(big), "AGTS_QUERY__MAX_RESULTS": "100000"}
    agts_cli = subprocess.Popen([sys.executable, "-m", "agts.cli", "query", "depth", "--start",
                                 "2026-03-02", "--end", "2026-03-03", *fmt],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert agts_cli.stdout is not None and agts_cli.stderr is not None
    head = subprocess.Popen(["head", "-1"], stdin=agts_cli.stdout, stdout=subprocess.PIPE,
                            text=True)
    agts_cli.stdout.close()  # head holds the only read end: when it exits, writes fail (EPIPE)
    first, _ = head.communicate(timeout=120)
    stderr = agts_cli.stderr.read()
    agts_cli.wait(timeout=120)
    assert first == ("[\n" if fmt == ["--json"] else "timestamp,metric_name,value,labels,series_id\n")
    assert (agts_cli.returncode, stderr) == (141, "")  # no traceback, no "Exception ignored"


@pytest.mark.parametrize("command", [
    ["status"], ["status", "--json"], [*QUERY, "--labels", "venue=okx"], ["--help"],
], ids=" ".join)
def test_a_closed_stdout_is_not_an_error(loaded: agts.StorageConfig, command: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "agts.cli", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(loaded))
    assert proc.stdout is not None
    proc.stdout.close()  # closed before the command writes anything
    _, stderr = proc.communicate(timeout=120)
    assert stderr == ""
    assert proc.returncode == (0 if command == ["--help"] else 141)  # argparse ignores EPIPE


# -- ingest: values that are not numbers -------------------------------------------------------


CSV = ('timestamp,metric_name,value,labels\n'
       '2026-02-02T10:00:00Z,queue_depth,5,"{""venue"": ""okx""}"\n'
       '2026-02-02T10:00:01Z,queue_depth,abc,"{""venue"": ""okx""}"\n'
       '2026-02-02T10:00:02Z,queue_depth,,"{""venue"": ""okx""}"\n'
       'yesterday,queue_depth,7,"{""venue"": ""okx""}"\n'
       '2026-02-02T10:00:04Z,queue_depth, 8 ,"{""venue"": ""okx""}"\n')
SKIPPED = [{"row": 1, "reason": "value: not a number (got 'abc')"},
           {"row": 2, "reason": "value: value is null"},
           {"row": 3, "reason": "timestamp: not an ISO 8601 time (got 'yesterday')"}]


def _stored(config: agts.StorageConfig) -> list[float]:
    with agts.connect(config) as engine:
        return engine.query_metrics("queue_depth", "2026-02-02", "2026-02-03")["value"].to_list()


def test_ingest_a_non_numeric_value_names_file_row_and_column(
    config: agts.StorageConfig, tmp_path: Path,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(CSV)
    result = run_cli("ingest", str(path), "--into", "metrics", config=config)
    assert_error(result, 1, f"{str(path)!r}: column 'value' row 1: not a number (got 'abc')")
    assert _stored(config) == []  # the file was refused before anything was written
    # a bad timestamp before any bad number
    path.write_text(CSV.replace("abc", "6"))
    result = run_cli("ingest", str(path), "--into", "metrics", config=config)
    assert_error(result, 1, "column 'timestamp' row 3: not an ISO 8601 time (got 'yesterday')")
    # an execution table: the same check, no skipping
    fills = tmp_path / "fills.csv"
    fills.write_text("timestamp,fill_id,order_id,price,size\n2026-02-02T10:00:00Z,f1,o1,1.5,x\n")
    result = run_cli("ingest", str(fills), "--into", "fills", config=config)
    assert_error(result, 1, "column 'size' row 0: not a number (got 'x')")
    result = run_cli("ingest", str(fills), "--into", "fills", "--on-error", "skip", config=config)
    assert_error(result, 2, "--on-error skip works with --into metrics only")


@pytest.mark.parametrize("batch_size", ["100", "2"])
def test_ingest_skip_stores_the_rest_and_lists_what_it_skipped(
    config: agts.StorageConfig, tmp_path: Path, batch_size: str,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(CSV)
    as_json = run_cli("ingest", str(path), "--into", "metrics", "--on-error", "skip",
                      "--batch-size", batch_size, "--json", config=config)
    assert as_json.returncode == 0, as_json.stderr
    [report] = json.loads(as_json.stdout)["files"]
    assert (report["rows_read"], report["rows_new"], report["skipped"]) == (5, 2, 3)
    assert report["skipped_rows"] == SKIPPED  # rows of the file, whatever the batch size
    assert _stored(config) == [5.0, 8.0]
    text = run_cli("ingest", str(path), "--into", "metrics", "--on-error", "skip",
                   "--batch-size", batch_size, config=config)
    assert text.returncode == 0, text.stderr
    assert "5 rows read, 0 new, 2 already stored, 3 skipped" in text.stdout
    listed = [line.strip() for line in text.stdout.splitlines() if line.startswith("  skipped")]
    assert listed == [f"skipped row {s['row']}: {s['reason']}" for s in SKIPPED]


def test_ingest_text_lists_at_most_twenty_skipped_rows(config: agts.StorageConfig,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("timestamp,metric_name,value\n" + "".join(
        f"2026-02-02T10:00:{i:02d}Z,queue_depth,{'n/a' if i % 2 else i}\n" for i in range(50)))
    result = run_cli("ingest", str(path), "--into", "metrics", "--on-error", "skip", config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("  skipped row ") == 20
    assert "  ... and 5 more skipped rows (--json lists them all)" in result.stdout
    assert "25 new" in result.stdout


@pytest.mark.parametrize(("name", "content", "fmt"), [
    pytest.param("bad.parquet", b"garbage", "parquet", id="parquet"),
    pytest.param("bad.arrow", b"garbage", "arrow", id="arrow"),
    pytest.param("bad.csv", b"timestamp,metric_name\n1,2,3,4\n", "csv", id="csv-ragged"),
])
def test_ingest_an_unreadable_file(config: agts.StorageConfig, tmp_path: Path, name: str,
                                   content: bytes, fmt: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_cli("ingest", str(path), "--into", "metrics", config=config)
    assert_error(result, 1, f"cannot read {str(path)!r} as {fmt}: ")


# -- query output files --------------------------------------------------------------------------


def test_output_into_a_missing_directory(loaded: agts.StorageConfig, tmp_path: Path) -> None:
    target = tmp_path / "missing_dir" / "x.csv"
    result = run_cli(*QUERY, "--output", str(target), config=loaded)
    assert_error(result, 1, f"cannot write --output {str(target)!r}: directory "
                            f"{str(target.parent)!r} does not exist")
    result = run_cli(*QUERY, "--output", str(tmp_path), "--format", "csv", config=loaded)
    assert_error(result, 1, "it is a directory")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--output", "{tmp}/x.xlsx"], "cannot tell the format of --output '{tmp}/x.xlsx' "
                 "from its extension; agts writes .csv (csv), .json (json), .parquet or .pq "
                 "(parquet)", id="xlsx"),
    pytest.param(["--format", "table", "--output", "{tmp}/x.txt"], "--format table is for the "
                 "terminal; --output writes .csv (csv), .json (json), .parquet or .pq (parquet)",
                 id="table"),
    pytest.param(["--format", "csv", "--output", "{tmp}/x.parquet"],
                 "--output '{tmp}/x.parquet' names a parquet file, but the format is csv",
                 id="mismatch"),
    pytest.param(["--json", "--format", "csv"], "--json and --format csv disagree", id="json-csv"),
])
def test_output_formats_agts_cannot_write_are_refused(
    loaded: agts.StorageConfig, tmp_path: Path, args: list[str], message: str,
) -> None:
    result = run_cli(*QUERY, *[a.replace("{tmp}", str(tmp_path)) for a in args], config=loaded)
    assert_error(result, 2, message.replace("{tmp}", str(tmp_path)))
    assert result.stdout == "" and list(tmp_path.iterdir()) == []  # nothing written


def test_a_failed_query_leaves_no_partial_file(loaded: agts.StorageConfig, tmp_path: Path) -> None:
    """The points stream into a temporary file renamed into place at the end: a query failing
    half-way (here: no privilege on the points) leaves the previous file as it was."""
    target = tmp_path / "points.csv"
    target.write_text("the previous export\n")
    role = f"agts_cli_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(loaded.database), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        conn.execute(f"GRANT USAGE ON SCHEMA agts TO {role}")
        conn.execute(f"GRANT SELECT ON agts.series, agts.schema_migrations TO {role}")
    try:
        reader = loaded.with_overrides(database={"user": role, "password": f"pw-{role}"})
        result = run_cli(*QUERY, "--output", str(target), config=reader)
        assert_error(result, 1, "permission denied")
        assert target.read_text() == "the previous export\n"
        assert [p.name for p in tmp_path.iterdir()] == ["points.csv"]  # no temporary file left
        ok = run_cli(*QUERY, "--output", str(target), config=loaded)
        assert ok.returncode == 0, ok.stderr
        assert pl.read_csv(target).height == ROWS
        assert [p.name for p in tmp_path.iterdir()] == ["points.csv"]
    finally:
        with psycopg.connect(conninfo(loaded.database), autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


# -- databases without TimescaleDB or without agts' schema ------------------------------------


@pytest.fixture(params=["no-timescaledb", "no-schema"])
def bare(request: pytest.FixtureRequest, blank_config: agts.StorageConfig) -> agts.StorageConfig:
    """A database without agts' schema: without TimescaleDB, or with the extension only."""
    if request.param == "no-schema":
        with psycopg.connect(conninfo(blank_config.database), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION timescaledb")
    return blank_config


def _installed(config: agts.StorageConfig) -> bool:
    with psycopg.connect(conninfo(config.database)) as conn:
        row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
                           ).fetchone()
        return bool(row and row[0])


def _has_agts_schema(config: agts.StorageConfig) -> bool:
    with psycopg.connect(conninfo(config.database)) as conn:
        row = conn.execute("SELECT to_regnamespace('agts') IS NOT NULL").fetchone()
        return bool(row and row[0])


def test_status_of_a_database_without_the_schema(bare: agts.StorageConfig) -> None:
    installed = _installed(bare)
    database = bare.database.describe().rsplit("/", 1)[1]
    result = run_cli("status", config=bare)
    assert_error(result, 1, f"database {database!r} " + (
        "has no agts schema" if installed else
        "has neither the TimescaleDB extension nor agts' schema") + ": run 'agts migrate up' to "
        "create it")
    assert "schema version  0 (" in result.stdout
    assert "pending: run 'agts migrate up')" in result.stdout
    assert ("not installed in this database" in result.stdout) is not installed
    as_json = run_cli("status", "--json", config=bare)
    assert_error(as_json, 1, "run 'agts migrate up'")
    report = json.loads(as_json.stdout)
    assert (report["schema_version"], report["tables"]) == (0, [])
    assert report["timescaledb_installed"] is installed
    assert not _has_agts_schema(bare)  # status only reads


@pytest.mark.parametrize("command", [
    ["storage"], ["storage", "--by", "chunk", "--json"], ["archive", "list"], ["rollups", "status"],
    ["retention", "run", "--dry-run"], ["query", "latency_ms"], ["ingest", "{csv}", "--into",
                                                                 "metrics"],
], ids=" ".join)
def test_commands_on_a_database_without_the_schema(bare: agts.StorageConfig, tmp_path: Path,
                                                   command: list[str]) -> None:
    (tmp_path / "points.csv").write_text(CSV)
    args = [str(tmp_path / "points.csv") if a == "{csv}" else a for a in command]
    result = run_cli(*args, config=bare)
    database = bare.database.describe().rsplit("/", 1)[1]
    assert_error(result, 1, f"database {database!r} ")
    assert result.stderr.rstrip().endswith("run 'agts migrate up' to create it")
    assert result.stdout == ""


def test_a_schema_older_than_the_command_says_so(config: agts.StorageConfig) -> None:
    # a schema older than this agts: the archive manifest (migration 0005) is not there yet
    down = run_cli("migrate", "down", "--to", "4", config=config)
    assert down.returncode == 0, down.stderr
    result = run_cli("archive", "list", config=config)
    assert_error(result, 1, 'failed: relation "agts.archive_manifest" does not exist; is the '
                            "schema up to date? see 'agts migrate status'")


# -- usage errors: exit 2, before connecting ---------------------------------------------------


UNREACHABLE = agts.StorageConfig.load(env={}, overrides={"database": {
    "port": 1, "connection_timeout_sec": 1}})


@pytest.mark.parametrize(("args", "message"), [
    pytest.param([*QUERY, "--bucket", "1hour"], "--bucket: bucket must be a timedelta or a "
                 "duration like '15s', '1m', '1h', '1d' (units us, ms, s, m, h, d, w), got '1hour'",
                 id="bucket"),
    pytest.param([*QUERY, "--bucket", "1h", "--agg", "p101"],
                 "--agg: percentile must be between p0 and p100, got 'p101'", id="agg"),
    pytest.param(["query", "latency_ms", "--start", "2026-03-03", "--end", "2026-03-02"],
                 "--start must not be after --end, got --start '2026-03-03T00:00:00.000000+00:00' "
                 "and --end '2026-03-02T00:00:00.000000+00:00'", id="range"),
    pytest.param(["query", "latency_ms", "--start", "2999-01-01"],
                 "--start must not be after --end, got --start '2999-01-01T00:00:00.000000+00:00'"
                 " and --end '", id="range-default-end"),
    pytest.param([*QUERY, "--agg", "p99"], "--agg needs --bucket (without it, the raw points are "
                 "returned)", id="agg-without-bucket"),
    pytest.param([*QUERY, "--agg", "p99", "--fill", "null"], "--agg and --fill need --bucket",
                 id="agg-fill-without-bucket"),
    pytest.param([*QUERY, "--bucket", "1h", "--limit", "5"],
                 "--limit applies to raw points, not to --bucket aggregates", id="limit-bucket"),
    pytest.param(["--dsn", "notadsn", "status"], "database.dsn is not a valid connection string",
                 id="dsn"),
    pytest.param(["status", "--dsn", "notadsn"], "database.dsn is not a valid connection string",
                 id="dsn-after"),
    pytest.param(["roles", "create", "--grant", "reader"], "--grant needs --to", id="roles"),
    pytest.param(["ingest", "x.csv", "--into", "metrics", "--batch-size", "0"],
                 "--batch-size must be positive, got 0", id="batch-size"),
])
def test_usage_mistakes_exit_2_before_connecting(args: list[str], message: str) -> None:
    # the database is unreachable: a usage error is found first (exit 2, not 3)
    result = run_cli(*args, config=UNREACHABLE)
    assert_error(result, 2, message)


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["query", "", "--start", "2026-03-02"], "metric_name must be a non-empty string, "
                 "got ''", id="metric-name"),
    pytest.param(["archive", "export", "metrics", "--start", "soon", "--root", "{tmp}"],
                 "soon", id="archive-start"),
    pytest.param(["archive", "restore", "nonsense", "2025-06-01", "2025-06-02"], "'nonsense'",
                 id="archive-table"),
])
def test_what_the_library_refuses_in_an_argument_is_a_usage_error(
    config: agts.StorageConfig, tmp_path: Path, args: list[str], message: str,
) -> None:
    result = run_cli(*[str(tmp_path) if a == "{tmp}" else a for a in args], config=config)
    assert_error(result, 2, message)


def test_usage_errors_of_argparse_keep_their_format() -> None:
    result = run_cli("query", "latency_ms", "--limit", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --limit: must be a positive integer, got '0'" in result.stderr


# -- queries that match nothing: exit 0, a warning says why --------------------------------


@pytest.mark.parametrize(("args", "warning"), [
    pytest.param(["query", "latency_mss"], "no metric 'latency_mss' is stored; did you mean "
                 "'latency_ms'?", id="metric"),
    pytest.param(["query", "nothing_like_it"], "no metric 'nothing_like_it' is stored (stored: "
                 "'latency_ms')", id="metric-no-match"),
    pytest.param(["query", "latency_ms", "--labels", "venue=okxx"],
                 "no series of 'latency_ms' has the label venue='okxx' (did you mean 'okx'?)",
                 id="label-value"),
    pytest.param(["query", "latency_ms", "--labels", "venue=kraken", "venue=bitstamp"],
                 "no series of 'latency_ms' has the label venue='kraken' or venue='bitstamp' "
                 "(stored: 'binance', 'okx')", id="label-values"),
    pytest.param(["query", "latency_ms", "--labels", "region=eu"],
                 "no series of 'latency_ms' has the label 'region' (its label keys: 'venue')",
                 id="label-key"),
    pytest.param(["query", "latency_ms", "--bucket", "1h", "--group-by", "region"],
                 "--group-by 'region': no series of 'latency_ms' has this label (its label keys: "
                 "'venue'); its column is null", id="group-by"),
])
def test_a_query_that_matches_nothing_says_why(loaded: agts.StorageConfig,
                                               args: list[str], warning: str) -> None:
    result = run_cli(*args, "--start", "2026-03-02", "--end", "2026-03-03", "--json",
                     config=loaded)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"agts: warning: {warning}"]
    rows = json.loads(result.stdout)
    if "--group-by" in args:  # grouped by a key no series has: one group, its key null
        assert [(r["region"], r["avg"] is not None) for r in rows] == [(None, True)] * 3
    else:
        assert rows == []


def test_an_empty_time_range_says_so(loaded: agts.StorageConfig) -> None:
    result = run_cli("query", "latency_ms", "--start", "2026-04-02", "--end", "2026-04-03",
                     "--format", "csv", config=loaded)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "agts: warning: no points of 'latency_ms' in [2026-04-02T00:00:00.000000+00:00, "
        "2026-04-03T00:00:00.000000+00:00)"]
    assert result.stdout == "timestamp,metric_name,value,labels,series_id\n"


# -- one timestamp format for CSV and JSON ---------------------------------------------------


@pytest.mark.parametrize("bucket", [[], ["--bucket", "1h", "--agg", "count"]], ids=["raw", "agg"])
def test_csv_and_json_write_the_same_timestamps(loaded: agts.StorageConfig, tmp_path: Path,
                                                bucket: list[str]) -> None:
    args = (*QUERY, "--labels", "venue=okx", *bucket)
    outputs = {}
    for name in ("out.csv", "out.json"):
        result = run_cli(*args, "--output", str(tmp_path / name), config=loaded)
        assert result.returncode == 0, result.stderr
    outputs["file csv"] = pl.read_csv(tmp_path / "out.csv", infer_schema=False)["timestamp"]
    outputs["file json"] = pl.Series([r["timestamp"] for r in json.loads(
        (tmp_path / "out.json").read_text())])
    stdout_csv = run_cli(*args, "--format", "csv", config=loaded)
    outputs["stdout csv"] = pl.read_csv(stdout_csv.stdout.encode(), infer_schema=False)["timestamp"]
    stdout_json = run_cli(*args, "--json", config=loaded)
    outputs["stdout json"] = pl.Series([r["timestamp"] for r in json.loads(stdout_json.stdout)])
    first = outputs["file csv"].to_list()
    assert first[0] == (ISO if bucket else "2026-03-02T00:00:01.000000+00:00")
    for where, values in outputs.items():
        assert values.to_list() == first, where
    parsed = [datetime.fromisoformat(t) for t in first]
    assert parsed == sorted(parsed) and parsed[0].tzinfo is not None


# -- version, connecting to the local cluster, the last-resort guard -------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"agts {agts.__version__}\n")


def _local_cluster(config: agts.StorageConfig) -> bool:
    from agts.db._local import local_password, local_port

    db = config.database
    return (not os.environ.get("AGTS_TEST_DSN") and local_password() is not None
            and db.port == local_port() and db.user == "agts")


def test_a_dsn_to_the_local_cluster_finds_its_password(config: agts.StorageConfig,
                                                       tmp_path: Path) -> None:
    if not _local_cluster(config):
        pytest.skip("needs the local default cluster (agts local start), not $AGTS_TEST_DSN")
    from agts.db._local import local_dir, local_port

    env = {k: v for k, v in _env().items() if k not in {"PGPASSWORD", "PGPASSFILE"}}
    env["PGPASSFILE"] = str(tmp_path / "none")  # no ~/.pgpass: the password comes from agts
    database = config.database.database
    for dsn in (f"host=127.0.0.1 port={local_port()} dbname={database} user=agts",
                f"postgresql://agts@localhost:{local_port()}/{database}"):
        result = subprocess.run([sys.executable, "-m", "agts.cli", "status", "--dsn", dsn],
                                capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert f":{local_port()}/{database}" in result.stdout
        assert "(up to date)" in result.stdout
    other = f"host=127.0.0.1 port={local_port()} dbname={database} user=somebody_else"
    result = subprocess.run([sys.executable, "-m", "agts.cli", "status", "--dsn", other],
                            capture_output=True, text=True, env=env, timeout=120)
    assert_error(result, 3, f"the local cluster's password for user 'agts' is in "
                            f"{str(local_dir() / 'password')!r}")


def test_an_unexpected_error_is_one_line_and_exit_1(tmp_path: Path) -> None:
    # A real misconfiguration agts does not check: a PostgreSQL bin directory without pg_ctl
    # for an initialized local cluster (subprocess raises FileNotFoundError).
    (tmp_path / "local" / "data").mkdir(parents=True)
    (tmp_path / "local" / "data" / "PG_VERSION").write_text("15\n")
    env = {"AGTS_LOCAL_DIR": str(tmp_path / "local"), "AGTS_PG_BINDIR": str(tmp_path / "bin")}
    result = run_cli("local", "status", env_extra=env)
    # FileNotFoundError, or PermissionError where root runs pg_ctl as the postgres user
    line = r"agts: error: (FileNotFoundError|PermissionError): \[Errno \d+\] [^:]+: '{}'".format(
        re.escape(str(tmp_path / "bin" / "pg_ctl")))
    assert_error(result, 1, "")
    assert re.fullmatch(line + re.escape(" (run with -v for details)"), result.stderr.strip())
    verbose = run_cli("-v", "local", "status", env_extra=env)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last):" in verbose.stderr
    assert re.fullmatch(line, verbose.stderr.splitlines()[-1])  # the traceback, then the line
