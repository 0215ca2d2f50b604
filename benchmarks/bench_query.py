"""Query benchmark: agts vs pandas.read_sql, psycopg -> Polars and ConnectorX, with the server's
own execution time (EXPLAIN ANALYZE), and every agts result checked against DuckDB over a Parquet
export of the raw points.

Data (loaded server-side with generate_series, so loading needs no client work):
  latency: --series series (default 200) x --points points (default 50,000) at 1 per second;
  pnl:     --pnl-series series (default 20) at 1 per minute over 30 days.
Defaults give 10.9M points. Cases:
  (a) one series, raw, 6 h            (b) one series, 1-minute avg/min/max over a day
  (c) pnl, hourly avg/min/max/count over 30 days, all its series
  (d) every latency series, raw, 2 h
(b) and (c) run before the rollups are refreshed (agts reads raw points) and after (rollups).

    .venv/bin/python benchmarks/bench_query.py                  # full size
    .venv/bin/python benchmarks/bench_query.py --series 40 --points 20000   # smaller
    .venv/bin/python benchmarks/bench_query.py --reuse          # keep the loaded database

The database is ``agts_bench_query`` on the server ``agts.connect()`` reaches (or ``--dsn``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import numpy as np
import polars as pl
import psycopg
import pyarrow.parquet as pq
from psycopg import sql

import agts
from agts.config import StorageConfig
from agts.db import Database, conninfo, resolved_password

DATABASE = "agts_bench_query"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
_last_sql: list[tuple[str, list[Any]]] = []


def _capture(original: Callable[..., Any]) -> Callable[..., Any]:
    """Every statement agts fetches as Arrow is remembered, to EXPLAIN ANALYZE it."""
    def wrapper(db: Any, query: str, params: Any = (), *, action: str) -> Any:
        _last_sql.append((query, list(params)))
        return original(db, query, params, action=action)
    return wrapper


Database.fetch_arrow = _capture(Database.fetch_arrow)  # type: ignore[method-assign]


def median_ms(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    result = fn()  # warm-up (and the result to verify)
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), result


def setup(base: StorageConfig, args: argparse.Namespace) -> StorageConfig:
    admin = conninfo(base.with_overrides(database={"database": "postgres"}).database)
    if base.database.dsn:
        admin = psycopg.conninfo.make_conninfo(admin, dbname="postgres")
    cfg = base.with_overrides(database={"database": DATABASE},
                              query={"max_results": 5_000_000, "cache_ttl_sec": 0})
    if base.database.dsn:
        cfg = cfg.with_overrides(database={"dsn": psycopg.conninfo.make_conninfo(
            base.database.dsn, dbname=DATABASE)})
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (DATABASE,)).fetchone()
        if exists and args.reuse:
            return cfg
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    with agts.connect(cfg, migrate=True) as engine, engine.db.connection() as conn:
        conn.autocommit = True
        began = time.perf_counter()
        conn.execute("INSERT INTO agts.series (metric_name, labels) SELECT 'latency', "
                     "jsonb_build_object('venue', 'v' || (i %% 5), 'market', 'm' || i) "
                     "FROM generate_series(0, %s - 1) AS i", (args.series,))
        conn.execute("INSERT INTO agts.series (metric_name, labels) SELECT 'pnl', "
                     "jsonb_build_object('book', 'b' || i) FROM generate_series(0, %s - 1) AS i",
                     (args.pnl_series,))
        conn.execute(
            "INSERT INTO agts.metric_points (time, series_id, value) "
            "SELECT %s::timestamptz + k * interval '1 second', s.series_id, "
            "100 + 10 * sin(k / 500.0 + s.series_id) + (k::bigint * 7919 %% 1000) / 100.0 "
            "FROM agts.series AS s CROSS JOIN generate_series(0, %s - 1) AS k "
            "WHERE s.metric_name = 'latency' ORDER BY s.series_id, k", (T0, args.points))
        conn.execute(
            "INSERT INTO agts.metric_points (time, series_id, value) "
            "SELECT %s::timestamptz + k * interval '1 minute', s.series_id, "
            "1000 * sin(k / 3000.0 + s.series_id) + (k::bigint * 104729 %% 977) / 10.0 "
            "FROM agts.series AS s CROSS JOIN generate_series(0, 30 * 1440 - 1) AS k "
            "WHERE s.metric_name = 'pnl' ORDER BY s.series_id, k", (T0,))
        conn.execute("VACUUM ANALYZE agts.metric_points")
        conn.execute("ANALYZE agts.series")
        total = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()
        print(f"loaded {total[0]:,} points in {time.perf_counter() - began:.1f} s "
              "(server-side generate_series INSERT)")
    return cfg


def export(engine: agts.StorageEngine, folder: Path) -> duckdb.DuckDBPyConnection:
    with engine.db.adbc() as conn, conn.cursor() as cur:
        cur.execute("SELECT time, series_id, value FROM agts.metric_points")
        pq.write_table(cur.fetch_arrow_table(), folder / "points.parquet")
        cur.execute("SELECT series_id, metric_name, labels::text AS labels FROM agts.series")
        pq.write_table(cur.fetch_arrow_table(), folder / "series.parquet")
    duck = duckdb.connect()
    duck.execute("SET TimeZone = 'UTC'")
    duck.execute(f"CREATE VIEW points AS SELECT * FROM '{folder / 'points.parquet'}'")
    duck.execute(f"CREATE VIEW series AS SELECT * FROM '{folder / 'series.parquet'}'")
    return duck


def duck_frame(duck: duckdb.DuckDBPyConnection, query: str, params: list[Any]) -> pl.DataFrame:
    frame = pl.from_arrow(duck.sql(query, params=params).to_arrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def server_ms(engine: agts.StorageEngine, query: str, params: list[Any]) -> float:
    """EXPLAIN ANALYZE of agts' statement: over ADBC with its $n parameters, or (a statement
    agts sends without parameters, which ADBC would wrap in COPY) over psycopg."""
    if not params:
        with engine.db.connection() as pconn:
            row = pconn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}").fetchone()  # type: ignore[arg-type]
        assert row is not None
        return float(row[0][0]["Execution Time"])
    with engine.db.adbc() as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query, parameters=tuple(params))
        plan = json.loads(cur.fetch_arrow_table().column(0)[0].as_py())
    return float(plan[0]["Execution Time"])


def peers(dsn: str, query: sql.Composed, repeat: int) -> dict[str, float]:
    import pandas as pd

    out: dict[str, float] = {}
    with psycopg.connect(dsn) as conn:
        text = query.as_string(conn)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas prefers SQLAlchemy connectables
            out["pandas.read_sql"] = median_ms(lambda: pd.read_sql(text, conn), repeat)[0]

        def via_psycopg() -> pl.DataFrame:
            with conn.cursor() as cur:
                cur.execute(text)  # type: ignore[arg-type]
                names = [d.name for d in cur.description or []]
                return pl.DataFrame(cur.fetchall(), schema=names, orient="row")
        out["psycopg->polars"] = median_ms(via_psycopg, repeat)[0]
        plan = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {text}").fetchone()  # type: ignore[arg-type]
        out["server (peer SQL)"] = float(plan[0][0]["Execution Time"])
    try:
        import connectorx as cx

        uri = dsn if dsn.startswith("postgres") else None
        if uri:
            out["connectorx"] = median_ms(
                lambda: cx.read_sql(uri, text, return_type="polars"), repeat)[0]
    except ImportError:
        out["connectorx"] = float("nan")
    return out


def same(actual: pl.DataFrame, expected: pl.DataFrame, *, rel: float = 1e-9) -> bool:
    if actual.shape != expected.shape:
        return False
    for a, e in zip(actual.iter_columns(), expected.iter_columns(), strict=True):
        if a.dtype.is_float():
            av, ev = a.to_numpy(), e.cast(pl.Float64).to_numpy()
            if not np.allclose(av, ev, rtol=rel, atol=0, equal_nan=True):
                return False
        elif a.cast(pl.Int64).to_list() != e.cast(pl.Int64).to_list():
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--points", type=int, default=50_000, help="points per latency series")
    parser.add_argument("--pnl-series", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--reuse", action="store_true", help="keep an already loaded database")
    parser.add_argument("--dsn", help="server (default: what agts.connect() reaches)")
    args = parser.parse_args()
    base = StorageConfig.from_dsn(args.dsn) if args.dsn else StorageConfig.load()
    cfg = setup(base, args)
    dsn = cfg.database.dsn or conninfo(cfg.database)
    if "://" not in dsn:  # ConnectorX takes URIs only
        d = cfg.database
        password = resolved_password(d)
        secret = ":" + quote(password, safe="") if password else ""
        dsn_uri = f"postgresql://{quote(d.user, safe='')}{secret}@{d.host}:{d.port}/{d.database}"
    else:
        dsn_uri = dsn
    market = f"m{min(17, args.series - 1)}"
    hours = args.points / 3600
    a_start = T0 + timedelta(hours=min(2, max(0, hours - 6)))
    d_start = T0 + timedelta(hours=max(0, min(4, hours - 2)))
    rows: list[dict[str, Any]] = []
    with agts.connect(cfg) as engine, tempfile.TemporaryDirectory() as tmp:
        with engine.db.connection() as conn:
            conn.execute("TRUNCATE agts.rollup_1m, agts.rollup_1h")
            conn.execute("UPDATE agts.rollup_state SET watermark = NULL, refreshed_at = NULL")
        duck = export(engine, Path(tmp))
        view = sql.SQL('SELECT "timestamp", metric_name, value, labels::text AS labels '
                       'FROM agts.metrics WHERE metric_name = {} AND "timestamp" >= {} '
                       'AND "timestamp" < {}')

        def case(label: str, run: Callable[[], pl.DataFrame], peer_sql: sql.Composed,
                 check: Callable[[pl.DataFrame], bool], *, with_peers: bool = True) -> None:
            _last_sql.clear()
            frame = run()  # warm-up, the SQL agts sends, and the result to verify
            query, params = _last_sql[-1]
            server_ms(engine, query, params)
            # agts and the server's own time for the same statement, interleaved, so both
            # medians see the same machine (it is shared; conditions drift within minutes).
            took, server = [], []
            for _ in range(args.repeat):
                began = time.perf_counter()
                run()
                took.append((time.perf_counter() - began) * 1000)
                server.append(server_ms(engine, query, params))
            row = {"case": label, "rows": frame.height, "agts": statistics.median(took),
                   "server (agts SQL)": statistics.median(server),
                   "equals DuckDB": check(frame)}
            if with_peers:
                row.update(peers(dsn_uri, peer_sql, args.repeat))
            rows.append(row)
            print(f"  {label}: {row['agts']:.1f} ms, {frame.height:,} rows", flush=True)

        a_end = a_start + timedelta(hours=6)
        case("(a) 1 series raw 6h",
             lambda: engine.query_metrics("latency", a_start, a_end, {"market": market}),
             view.format("latency", a_start, a_end) + sql.SQL(" AND labels @> {}::jsonb ORDER BY 1")
             .format(json.dumps({"market": market})),
             lambda f: same(f.select("timestamp", "value"), duck_frame(
                 duck, "SELECT p.time, p.value FROM points p JOIN series s USING (series_id) "
                 "WHERE s.metric_name = 'latency' AND json_extract_string(s.labels, '$.market') "
                 "= ? AND p.time >= ? AND p.time < ? ORDER BY p.time", [market, a_start, a_end])))

        def bucketed(metric: str, labels: dict[str, str] | None, start: datetime, end: datetime,
                     bucket: str, aggs: list[str], step_s: int) -> tuple[Any, Any, Any]:
            run = lambda: engine.query_aggregated(metric, start, end, bucket, aggs, labels)  # noqa: E731
            cols = ", ".join({"avg": "avg(value)", "min": "min(value)", "max": "max(value)",
                              "count": "count(*)"}[a] for a in aggs)
            peer = sql.SQL("SELECT time_bucket({}::interval, \"timestamp\") AS b, " + cols +
                           " FROM agts.metrics WHERE metric_name = {} AND \"timestamp\" >= {} "
                           "AND \"timestamp\" < {}" +
                           (" AND labels @> {}::jsonb" if labels else "") +
                           " GROUP BY 1 ORDER BY 1").format(
                timedelta(seconds=step_s), metric, start, end,
                *([json.dumps(labels)] if labels else []))
            where = "AND json_extract_string(s.labels, '$.market') = ?" if labels else ""
            expected = duck_frame(duck, (
                f"SELECT epoch_us(p.time) // {step_s * 10**6} * {step_s * 10**6} AS b, {cols} "
                "FROM points p JOIN series s USING (series_id) WHERE s.metric_name = ? "
                f"AND p.time >= ? AND p.time < ? {where} GROUP BY 1 ORDER BY 1"),
                [metric, start, end, *(labels.values() if labels else [])])
            check = lambda f: same(  # noqa: E731
                f.with_columns(pl.col("timestamp").cast(pl.Int64)), expected)
            return run, peer, check

        b = bucketed("latency", {"market": market}, T0, T0 + timedelta(days=1), "1m",
                     ["avg", "min", "max"], 60)
        c = bucketed("pnl", None, T0, T0 + timedelta(days=30), "1h",
                     ["avg", "min", "max", "count"], 3600)
        case("(b) 1 series 1-min buckets, 1 day [raw points]", *b)
        case("(c) 30-day hourly, pnl [raw points]", *c)
        began = time.perf_counter()
        engine.refresh_rollups()
        refresh_s = time.perf_counter() - began
        case("(b) 1 series 1-min buckets, 1 day [rollup]", *b, with_peers=False)
        case("(c) 30-day hourly, pnl [rollup]", *c, with_peers=False)
        d_end = d_start + timedelta(hours=2)
        case("(d) all series raw 2h",
             lambda: engine.query_metrics("latency", d_start, d_end),
             view.format("latency", d_start, d_end) + sql.SQL(" ORDER BY 1"),
             lambda f: same(f.select("timestamp", "series_id", "value"), duck_frame(
                 duck, "SELECT p.time, p.series_id, p.value FROM points p JOIN series s "
                 "USING (series_id) WHERE s.metric_name = 'latency' AND p.time >= ? "
                 "AND p.time < ? ORDER BY p.time, p.series_id", [d_start, d_end])))
        with engine.db.connection() as conn:
            total = conn.execute("SELECT count(*) FROM agts.metric_points").fetchone()[0]
    table = pl.DataFrame(rows).with_columns(
        (pl.col("agts") / pl.col("server (agts SQL)")).alias("agts / server"),
        (pl.col("pandas.read_sql") / pl.col("agts")).alias("pandas / agts"),
    ).with_columns(pl.selectors.float().round(1))
    print(f"\n{total:,} points ({args.series} latency series x {args.points:,}, "
          f"{args.pnl_series} pnl series x 43,200); median of {args.repeat}, ms (agts and the "
          "server's EXPLAIN ANALYZE of agts' statement interleaved); "
          f"rollup refresh (first, everything): {refresh_s:.1f} s")
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=250, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True):
        print(table)


if __name__ == "__main__":
    main()
