from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agts import ConfigError, StorageConfig
from agts._dsn import parse_dsn
from agts.db import conninfo, resolved_password
from agts.errors import redact


def test_defaults_are_the_seed_values() -> None:
    cfg = StorageConfig.load(env={})
    assert (cfg.ingestion.batch_size, cfg.ingestion.flush_interval_ms, cfg.ingestion.max_buffer_size) == (
        1000, 100, 10000)
    assert (cfg.retention.metrics_retention_days, cfg.retention.execution_retention_days,
            cfg.retention.compression_after_days) == (90, 365, 7)
    assert (cfg.query.max_results, cfg.query.cache_ttl_sec) == (10000, 60.0)
    assert (cfg.database.max_connections, cfg.database.connection_timeout_sec) == (10, 5.0)
    assert cfg.database.database == "ag_botkit"
    assert cfg.source == "defaults"


def test_file_then_environment_then_arguments(tmp_path: Path) -> None:
    path = tmp_path / "agts.yaml"
    path.write_text(
        "database:\n  host: db.internal\n  port: 6543\n"
        "ingestion:\n  batch_size: 2000\n  max_buffer_size: 50000\n"
        "retention:\n  per_metric_days: {latency_ms: 7}\n"
    )
    env = {"AGTS_INGESTION__BATCH_SIZE": "3000", "AGTS_QUERY__CACHE_TTL_SEC": "2.5"}
    cfg = StorageConfig.load(path, env=env, overrides={"query": {"max_results": 5}})
    assert cfg.database.host == "db.internal"
    assert cfg.database.port == 6543
    assert cfg.ingestion.batch_size == 3000  # environment beats the file
    assert cfg.ingestion.max_buffer_size == 50000
    assert cfg.query.cache_ttl_sec == 2.5
    assert cfg.query.max_results == 5  # arguments beat everything
    assert cfg.retention.per_metric_days == {"latency_ms": 7}
    assert cfg.source == f"defaults < {path} < environment < arguments"


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("query:\n  max_results: 77\n")
    assert StorageConfig.load(env={"AGTS_CONFIG": str(path)}).query.max_results == 77


def test_dsn_from_environment_wins_over_fields() -> None:
    cfg = StorageConfig.load(env={"AGTS_DSN": "host=h1 port=7000 dbname=d1 user=u1"})
    info = conninfo(cfg.database)
    assert "host=h1" in info and "port=7000" in info and "dbname=d1" in info
    assert cfg.database.describe() == "u1@h1:7000/d1"



def test_overrides_of_a_dsn_config_go_into_the_dsn() -> None:
    cfg = StorageConfig.load(env={"AGTS_DSN": "postgresql://u1:s3cret@h1:7000/d1?sslmode=disable"})
    other = cfg.with_overrides(database={"database": "d2", "user": "u2", "password": "p2"})
    assert other.database.describe() == "u2@h1:7000/d2"
    info = conninfo(other.database)
    assert "dbname=d2" in info and "password=p2" in info and "sslmode=disable" in info
    assert "s3cret" not in repr(other) and "p2" not in repr(other.database)
    assert cfg.with_overrides(database={"port": 7001}).database.describe() == "u1@h1:7001/d1"
    assert cfg.with_overrides(database={"max_connections": 3}).database.dsn == cfg.database.dsn


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param({"ingestion": {"batch_size": 0}},
                     "ingestion.batch_size must be a positive number, got 0", id="zero-batch"),
        pytest.param({"ingestion": {"batch_size": "many"}},
                     "ingestion.batch_size must be an integer, got 'many'", id="text-batch"),
        pytest.param({"ingestion": {"batch_size": 20000}},
                     r"ingestion.max_buffer_size must be at least ingestion.batch_size \(20000\), got 10000",
                     id="buffer-smaller-than-batch"),
        pytest.param({"ingestion": {"backpressure": "panic"}},
                     "ingestion.backpressure must be one of 'block', 'raise', 'drop_oldest', got 'panic'",
                     id="bad-policy"),
        pytest.param({"database": {"port": 70000}},
                     "database.port must be a positive number and at most 65535, got 70000", id="port"),
        pytest.param({"database": {"sslmode": "maybe"}},
                     "database.sslmode must be one of 'disable', .* got 'maybe'", id="sslmode"),
        pytest.param({"database": {"colour": "blue"}},
                     "unknown key in section 'database': 'colour'; allowed: application_name", id="key"),
        pytest.param({"storage": {}}, "unknown section in arguments: 'storage'", id="section"),
        pytest.param({"retention": {"per_metric_days": {"x": -1}}},
                     r"retention.per_metric_days\['x'\] must be a positive integer, got -1", id="per-metric"),
        pytest.param({"query": {"cache_ttl_sec": -1}},
                     "query.cache_ttl_sec must be zero or a positive number, got -1.0", id="ttl"),
    ],
)
def test_invalid_values_name_key_value_and_allowed(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StorageConfig.load(env={}, overrides=overrides)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("database: [1, 2", "is not valid YAML", id="syntax"),
        pytest.param("- a\n- b\n", "must hold a mapping of sections", id="list"),
        pytest.param("database: 5\n", "database in .* must be a mapping, got 5", id="scalar-section"),
    ],
)
def test_bad_files_are_rejected(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        StorageConfig.load(path, env={})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' cannot be read"):
        StorageConfig.load(tmp_path / "nope.yaml", env={})


def test_unknown_environment_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown section in environment variable AGTS_STORGE__X"):
        StorageConfig.load(env={"AGTS_STORGE__X": "1"})


def test_passwords_never_shown() -> None:
    cfg = StorageConfig.load(env={}, overrides={"database": {
        "password": "hunter2", "dsn": "postgresql://bob:s3cret@db:5432/x"}})
    for text in (repr(cfg), repr(cfg.database), str(cfg)):
        assert "hunter2" not in text and "s3cret" not in text
    assert "password='***'" in repr(cfg.database)
    # ...but the connection string has them
    assert "s3cret" in conninfo(cfg.database)


def test_password_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    cfg = StorageConfig.load(env={"AGTS_DATABASE__PASSWORD_FILE": str(secret)})
    assert resolved_password(cfg.database) == "from-file"
    monkeypatch.setenv("PGPASSWORD", "from-env")
    assert resolved_password(StorageConfig.load(env={}, overrides={"database": {"port": 1}}).database) \
        == "from-env"
    gone = StorageConfig.load(env={"AGTS_DATABASE__PASSWORD_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="database.password_file '.*missing' cannot be read"):
        conninfo(gone.database)


def test_with_overrides_validates() -> None:
    cfg = StorageConfig.load(env={})
    assert cfg.with_overrides(query={"max_results": 3}).query.max_results == 3
    with pytest.raises(ConfigError, match="query.max_results must be a positive number, got 0"):
        cfg.with_overrides(query={"max_results": 0})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=x password=abc user=u", "host=x password=*** user=u"),
        ("host=x password='a b c' user=u", "host=x password=*** user=u"),
        ("postgresql://user:pa:ss@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def _fragments(secret: str, size: int = 4) -> set[str]:
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


@pytest.mark.parametrize(("dsn", "secret", "where"), [
    pytest.param("postgresql://u:sec%zzret@h/db", "sec%zzret", "not followed by two hex digits",
                 id="bad-percent-encoding"),
    pytest.param("password=hunter2 w0rd", "hunter2 w0rd", "a word without '=' after the value "
                 "of 'password'", id="unquoted-space"),
    pytest.param("u:p@ss@host", "p@ss", "expected a postgresql:// URI or key=value pairs",
                 id="no-scheme"),
    pytest.param("postgresql://u:p@ss@host/db", "p@ss", "holds an '@'", id="at-in-password"),
    pytest.param("password=a b=c dbname=x", "a b=c", "unknown keyword after the value of "
                 "'password'", id="space-then-equals"),
    pytest.param("password='s3cr3t dbname=x", "s3cr3t", "quoted value of 'password' is not closed",
                 id="unclosed-quote"),
    pytest.param("postgresql://u:p%C3%28@h/db", "p%C3%28", "not UTF-8", id="not-utf8"),
    pytest.param("mysql://admin:t0psecret@h/db", "t0psecret", "must start with postgresql://",
                 id="other-scheme"),
    pytest.param("postgresql://u:pw@h/db?passw0rd=hunter22", "hunter22", "not a libpq connection "
                 "option", id="unknown-query-parameter"),
    pytest.param("=s3cr3tv4l host=h", "s3cr3tv4l", "expected a keyword at the start",
                 id="no-keyword"),
])
def test_a_malformed_dsn_shows_no_part_of_its_password(
        dsn: str, secret: str, where: str, tmp_path: Path) -> None:
    """libpq quoted the text it could not parse (``invalid percent-encoded token: "sec%zzret"``);
    agts parses DSNs itself and says only where the problem is."""
    for make in (lambda: StorageConfig.from_dsn(dsn),
                 lambda: StorageConfig.load(env={"AGTS_DSN": dsn}),
                 lambda: StorageConfig.load(env={}).with_overrides(database={"dsn": dsn})):
        with pytest.raises(ConfigError, match=re.escape(where)) as info:
            make()
        message = str(info.value)
        assert not any(part in message for part in _fragments(secret)), message
    result = subprocess.run([sys.executable, "-m", "agts.cli", "--dsn", dsn, "status"],
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if not k.startswith("AGTS_")})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert not any(part in result.stderr + result.stdout for part in _fragments(secret))


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://user:pa%40ss@host:6000/db?sslmode=require",
     {"user": "user", "password": "pa@ss", "host": "host", "port": "6000", "dbname": "db",
      "sslmode": "require"}),
    ("host=h password='se cret \\' q' dbname=x", {"host": "h", "password": "se cret ' q",
                                                 "dbname": "x"}),
    ("postgresql://[::1]:5433/db", {"host": "::1", "port": "5433", "dbname": "db"}),
    ("postgres://h1:1,h2:2/db", {"host": "h1,h2", "port": "1,2", "dbname": "db"}),
    ("postgresql:///db?host=/var/run/postgresql", {"dbname": "db", "host": "/var/run/postgresql"}),
])
def test_valid_dsns_parse_as_libpq_does(dsn: str, expected: dict[str, str]) -> None:
    import psycopg

    assert parse_dsn(dsn) == expected
    assert {k: v for k, v in psycopg.conninfo.conninfo_to_dict(dsn).items()} == expected


def test_replicas_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "agts.yaml"
    path.write_text("database:\n  replicas: [db-r1:5433, 'host=db-r2 port=5434 sslmode=require']\n"
                    "  replica_max_lag_sec: 2.5\n  replica_choice: least_lag\n")
    cfg = StorageConfig.load(path, env={})
    assert cfg.database.replicas == ("db-r1:5433", "host=db-r2 port=5434 sslmode=require")
    assert (cfg.database.replica_max_lag_sec, cfg.database.replica_choice) == (2.5, "least_lag")
    env = {"AGTS_DATABASE__REPLICAS": " db-r3:6000 , db-r4 ,"}
    assert StorageConfig.load(path, env=env).database.replicas == ("db-r3:6000", "db-r4")
    assert StorageConfig.load(env={}).database.replicas == ()
    one = StorageConfig.load(env={}, overrides={"database": {"replicas": "db-r5:5433"}})
    assert one.database.replicas == ("db-r5:5433",)  # a string is a comma-separated list


def test_a_replica_takes_what_it_does_not_set_from_the_primary() -> None:
    from agts.db._replicas import replica_config

    primary = StorageConfig.load(env={"AGTS_DSN": "postgresql://bot:s3cr%40t@db-main:5432/trading"
                                                  "?sslmode=require"}).database
    replica = replica_config(primary, "db-r1:5433", 0)
    info = conninfo(replica)
    for part in ("host=db-r1", "port=5433", "dbname=trading", "user=bot", "sslmode=require"):
        assert part in info, part
    assert replica.describe() == "bot@db-r1:5433/trading"
    own = replica_config(primary, "postgresql://reader:other@db-r2/trading", 1)
    assert own.describe() == "reader@db-r2:5432/trading"


@pytest.mark.parametrize(("replicas", "message"), [
    (["db-r1:notaport"], "database.replicas[0]: the port must be a number"),
    (["db-r1:5433", "db-r2:99999"], "database.replicas[1]: the port must be a number"),
    ([""], "database.replicas[0] must be host, host:port or a connection string"),
    ([5433], "database.replicas[0] must be host, host:port or a connection string, got int"),
    ({"db-r1": 5433}, "database.replicas must be a list"),
    (["postgresql://u:hunter2@db-r1:xx/db"], "database.replicas[0] is not a valid connection"),
])
def test_bad_replicas_are_refused_naming_the_entry(replicas: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        StorageConfig.load(env={}, overrides={"database": {"replicas": replicas}})
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_replica_passwords_never_shown() -> None:
    cfg = StorageConfig.load(env={}, overrides={"database": {
        "replicas": ["postgresql://u:hunter2@db-r1/db", "host=db-r2 password=hunter3"]}})
    shown = repr(cfg) + repr(cfg.database) + str(cfg.database)
    assert "hunter2" not in shown and "hunter3" not in shown
    assert "db-r1" in shown
