"""TSBS cpu-only style workload through agts' public API, next to DuckDB in-process over the same
rows and hand-written SQL on the same TimescaleDB, as ratios; every agts answer is checked
against DuckDB's.

Data (generated here, seeded): --hosts hosts (default 100) x 10 cpu metrics (usage_user ...
usage_guest_nice) every 10 s for --hours hours (default 12): 4.32M points, labels hostname,
region, datacenter, rack; ingested with ``insert_metrics_batch``. DuckDB holds the same rows in
TSBS's own wide ``cpu`` table (one row per host and instant, a column per metric), its natural
layout. Hand SQL reads agts' tables (``agts.series``, ``agts.metric_points``) over ADBC into
Arrow, written as well as we know how.

Queries (TSBS names): single-groupby-1-1-1, single-groupby-5-1-1, single-groupby-5-8-1,
cpu-max-all-1, double-groupby-1, double-groupby-all, high-cpu-1, lastpoint,
groupby-orderby-limit. Each runs --repeat times (default 15) over rotating random hosts and
windows (the same for every contender), interleaved; medians in ms. The query cache is off. agts
runs twice: over raw points, then with its rollups refreshed (what a deployment has).

    .venv/bin/python benchmarks/bench_tsbs.py                     # 4.32M points
    .venv/bin/python benchmarks/bench_tsbs.py --hosts 10 --hours 2   # small
    .venv/bin/python benchmarks/bench_tsbs.py --reuse             # keep the loaded database

The data goes to a database of its own (``agts_bench_tsbs_<hex>``, dropped at the end; with
``--reuse``, ``agts_bench_tsbs`` marked as this benchmark's and kept) on the server
``agts.connect()`` reaches.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

import agts
from agts.config import StorageConfig

METRICS = ["usage_user", "usage_system", "usage_idle", "usage_nice", "usage_iowait", "usage_irq",
           "usage_softirq", "usage_steal", "usage_guest", "usage_guest_nice"]
FIVE = METRICS[:5]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=10)
MARK = "agts benchmark: bench_tsbs.py (its data only)"
REUSED = "agts_bench_tsbs"

TARGETS = {  # the targets, as agts ÷ DuckDB (lastpoint: ms)
    "single-groupby-1-1-1": 1.0, "single-groupby-5-1-1": 1.5, "single-groupby-5-8-1": 1.5,
    "cpu-max-all-1": 1.5, "double-groupby-1": 1.0, "double-groupby-all": 0.3,
    "high-cpu-1": 1.5, "groupby-orderby-limit": 1.0,
}


# -- data --------------------------------------------------------------------------------------


def generate(hosts: int, hours: float, seed: int) -> pl.DataFrame:
    """The wide cpu table: time, the four tags, one column per metric (random walks in 0..100)."""
    rng = np.random.default_rng(seed)
    steps = int(hours * 3600 / STEP.total_seconds())
    times = pl.datetime_range(T0, T0 + STEP * (steps - 1), STEP, time_zone="UTC", eager=True)
    parts = []
    for h in range(hosts):
        walk = np.clip(50 + np.cumsum(rng.normal(0, 1.5, (steps, len(METRICS))), axis=0), 0, 100)
        parts.append(pl.DataFrame({
            "time": times, "hostname": f"host_{h}", "region": f"region_{h % 5}",
            "datacenter": f"dc_{h % 11}", "rack": str(h % 67),
            **{m: walk[:, i] for i, m in enumerate(METRICS)}}))
    return pl.concat(parts).sort("time", "hostname")


def long_points(wide: pl.DataFrame) -> pl.DataFrame:
    """agts' shape: one row per (metric, host, instant), labels as a struct."""
    return wide.unpivot(METRICS, index=["time", "hostname", "region", "datacenter", "rack"],
                        variable_name="metric_name").select(
        pl.col("time").alias("timestamp"), "metric_name", "value",
        pl.struct("hostname", "region", "datacenter", "rack").alias("labels"))


def load(engine: agts.StorageEngine, wide: pl.DataFrame) -> float:
    began = time.perf_counter()
    points = long_points(wide)
    for offset in range(0, points.height, 500_000):
        engine.insert_metrics_batch(points.slice(offset, 500_000))
    with engine.db.connection(autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE agts.metric_points")
        conn.execute("ANALYZE agts.series")
    return time.perf_counter() - began


# -- the contenders ------------------------------------------------------------------------------


@dataclass
class Params:
    host: str
    start: datetime  # of a 1 h window; 8 h and 12 h windows start at T0
    end12: datetime
    before: datetime  # groupby-orderby-limit's end point


def _filters(fields: list[str], fn: str) -> str:
    return ", ".join(f"{fn}(value) FILTER (WHERE metric_name = '{m}') AS {m}" for m in fields)


def _duck_aggs(fields: list[str], fn: str) -> str:
    return ", ".join(f"{fn}({m}) AS {m}" for m in fields)


class Contenders:
    def __init__(self, engine: agts.StorageEngine, duck: duckdb.DuckDBPyConnection,
                 hours: float) -> None:
        self.engine = engine
        self.duck = duck
        self.hours = hours
        import adbc_driver_postgresql.dbapi as adbc

        from agts.db import conninfo

        self.cursor = adbc.connect(conninfo(engine.config.database))  # hand SQL's connection

    def close(self) -> None:
        self.cursor.close()

    # hand SQL over ADBC -> Arrow -> Polars
    def sql(self, query: str, params: list[Any]) -> pl.DataFrame:
        with self.cursor.cursor() as cur:
            cur.execute(query, parameters=tuple(params))
            frame = pl.from_arrow(cur.fetch_arrow_table())
        self.cursor.rollback()
        assert isinstance(frame, pl.DataFrame)
        return frame

    def ddb(self, query: str, params: list[Any]) -> pl.DataFrame:
        frame = pl.from_arrow(self.duck.sql(query, params=params).to_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        return frame

    def cases(self) -> dict[str, dict[str, Callable[[Params], pl.DataFrame]]]:
        e, hours8 = self.engine, min(8.0, self.hours)
        h8 = timedelta(hours=hours8)
        hour = timedelta(hours=1)
        lab = lambda p: {"hostname": p.host}  # noqa: E731

        def agg_host(fields: list[str], span: Callable[[Params], tuple[datetime, datetime]],
                     bucket: str, fn: str) -> dict[str, Callable[[Params], pl.DataFrame]]:
            interval = {"1m": "1 minute", "1h": "1 hour"}[bucket]
            hand = (f"SELECT time_bucket('{interval}', time) AS t, {_filters(fields, fn)} "
                    "FROM agts.metric_points p JOIN agts.series s USING (series_id) "
                    "WHERE s.metric_name = ANY($1) AND s.labels @> $2::jsonb "
                    "AND p.time >= $3 AND p.time < $4 GROUP BY 1 ORDER BY 1")
            ddb = (f"SELECT time_bucket(INTERVAL '{interval}', time) AS t, "
                   f"{_duck_aggs(fields, fn)} FROM cpu WHERE hostname = ? AND time >= ? "
                   "AND time < ? GROUP BY 1 ORDER BY 1")
            if len(fields) == 1:
                def ours(p: Params) -> pl.DataFrame:
                    return e.query_aggregated(fields[0], *span(p), bucket, fn, lab(p))
            else:
                def ours(p: Params) -> pl.DataFrame:
                    return e.query_metrics_multi(fields, *span(p), lab(p), bucket=bucket,
                                                 aggregation=fn, shape="wide")
            return {
                "agts": ours,
                "hand SQL": lambda p: self.sql(hand, [fields, f'{{"hostname": "{p.host}"}}',
                                                      *span(p)]),
                "DuckDB": lambda p: self.ddb(ddb, [p.host, *span(p)]),
            }

        def one_hour(p: Params) -> tuple[datetime, datetime]:
            return p.start, p.start + hour

        def eight(p: Params) -> tuple[datetime, datetime]:
            return T0, T0 + h8

        def twelve(p: Params) -> tuple[datetime, datetime]:
            return T0, p.end12

        def by_host(fields: list[str]) -> dict[str, Callable[[Params], pl.DataFrame]]:
            hand = (f"SELECT time_bucket('1 hour', time) AS t, s.labels->>'hostname' AS hostname,"
                    f" {_filters(fields, 'avg')} FROM agts.metric_points p JOIN agts.series s "
                    "USING (series_id) WHERE s.metric_name = ANY($1) AND p.time >= $2 "
                    "AND p.time < $3 GROUP BY 1, 2 ORDER BY 1, 2")
            ddb = (f"SELECT time_bucket(INTERVAL '1 hour', time) AS t, hostname, "
                   f"{_duck_aggs(fields, 'avg')} FROM cpu WHERE time >= ? AND time < ? "
                   "GROUP BY 1, 2 ORDER BY 1, 2")
            if len(fields) == 1:
                def ours(p: Params) -> pl.DataFrame:
                    return e.query_aggregated(fields[0], *twelve(p), "1h", "avg",
                                              group_by=["hostname"])
            else:
                def ours(p: Params) -> pl.DataFrame:
                    return e.query_metrics_multi(fields, *twelve(p), bucket="1h",
                                                 aggregation="avg", group_by=["hostname"],
                                                 shape="wide")
            return {"agts": ours, "hand SQL": lambda p: self.sql(hand, [fields, *twelve(p)]),
                    "DuckDB": lambda p: self.ddb(ddb, list(twelve(p)))}

        def high_cpu_agts(p: Params) -> pl.DataFrame:
            wide = e.query_metrics_multi(METRICS, *twelve(p), lab(p), shape="wide")
            return wide.filter(pl.col("usage_user") > 90)

        high_hand = (f"SELECT * FROM (SELECT p.time, {_filters(METRICS, 'max')} "
                     "FROM agts.metric_points p JOIN agts.series s USING (series_id) "
                     "WHERE s.metric_name = ANY($1) AND s.labels @> $2::jsonb "
                     "AND p.time >= $3 AND p.time < $4 GROUP BY 1) AS w "
                     "WHERE usage_user > 90 ORDER BY 1")
        high_ddb = (f"SELECT time, {', '.join(METRICS)} FROM cpu WHERE hostname = ? "
                    "AND time >= ? AND time < ? AND usage_user > 90 ORDER BY time")

        def lastpoint_agts(p: Params) -> pl.DataFrame:
            latest = e.latest(METRICS)
            return latest.select(pl.col("labels").struct.field("hostname"), "metric_name",
                                 "timestamp", "value").pivot(
                "metric_name", index=["hostname", "timestamp"], values="value").sort("hostname")

        last_hand = ("SELECT s.labels->>'hostname' AS hostname, s.metric_name, l.time, l.value "
                     "FROM agts.series s CROSS JOIN LATERAL (SELECT time, value FROM "
                     "agts.metric_points p WHERE p.series_id = s.series_id ORDER BY time DESC "
                     "LIMIT 1) AS l WHERE s.metric_name = ANY($1)")
        last_ddb = (f"SELECT hostname, arg_max(time, time) AS time, "
                    f"{', '.join(f'arg_max({m}, time) AS {m}' for m in METRICS)} FROM cpu "
                    "GROUP BY hostname ORDER BY hostname")

        def last_hand_wide(p: Params) -> pl.DataFrame:
            return self.sql(last_hand, [METRICS]).pivot(
                "metric_name", index=["hostname", "time"], values="value").sort("hostname")

        limit_hand = ("SELECT time_bucket('1 minute', p.time) AS t, max(p.value) AS max "
                      "FROM agts.metric_points p JOIN agts.series s USING (series_id) "
                      "WHERE s.metric_name = 'usage_user' AND p.time < $1 GROUP BY 1 "
                      "ORDER BY 1 DESC LIMIT 5")
        limit_ddb = ("SELECT time_bucket(INTERVAL '1 minute', time) AS t, max(usage_user) AS max "
                     "FROM cpu WHERE time < ? GROUP BY 1 ORDER BY 1 DESC LIMIT 5")

        def limit_agts(p: Params) -> pl.DataFrame:
            frame = e.query_aggregated("usage_user", p.before - timedelta(minutes=5), p.before,
                                       "1m", "max")
            return frame.sort("timestamp", descending=True)

        return {
            "single-groupby-1-1-1": agg_host(["usage_user"], one_hour, "1m", "max"),
            "single-groupby-5-1-1": agg_host(FIVE, one_hour, "1m", "max"),
            "single-groupby-5-8-1": agg_host(FIVE, eight, "1m", "max"),
            "cpu-max-all-1": agg_host(METRICS, eight, "1h", "max"),
            "double-groupby-1": by_host(["usage_user"]),
            "double-groupby-all": by_host(METRICS),
            "high-cpu-1": {
                "agts": high_cpu_agts,
                "hand SQL": lambda p: self.sql(high_hand, [METRICS, f'{{"hostname": "{p.host}"}}',
                                                           *twelve(p)]),
                "DuckDB": lambda p: self.ddb(high_ddb, [p.host, *twelve(p)])},
            "lastpoint": {"agts": lastpoint_agts, "hand SQL": last_hand_wide,
                          "DuckDB": lambda p: self.ddb(last_ddb, [])},
            "groupby-orderby-limit": {
                "agts": limit_agts, "hand SQL": lambda p: self.sql(limit_hand, [p.before]),
                "DuckDB": lambda p: self.ddb(limit_ddb, [p.before])},
        }


def same(name: str, ours: pl.DataFrame, theirs: pl.DataFrame) -> None:
    """agts' answer equals DuckDB's: the same rows, positionally the same columns, values to
    floating-point rounding."""
    a = ours.rename({c: f"c{i}" for i, c in enumerate(ours.columns)})
    b = theirs.rename({c: f"c{i}" for i, c in enumerate(theirs.columns)})
    if name == "lastpoint":  # agts pivots metric columns in first-seen order
        a = ours.select("hostname", "timestamp", *METRICS)
        b = theirs.select("hostname", "time", *METRICS)
        a.columns = b.columns = [f"c{i}" for i in range(a.width)]
    assert a.width == b.width, f"{name}: {ours.columns} vs {theirs.columns}"
    try:
        assert_frame_equal(a, b, check_dtypes=False, check_exact=False, rel_tol=1e-9,
                           abs_tol=1e-9)
    except AssertionError as exc:
        raise AssertionError(f"{name}: agts differs from DuckDB\n{exc}") from None


def measure(case: dict[str, Callable[[Params], pl.DataFrame]], params: list[Params],
            repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in case}
    for i in range(repeat):
        p = params[i % len(params)]
        for label, fn in case.items():  # interleaved: every contender sees the same machine
            began = time.perf_counter()
            fn(p)
            times[label].append((time.perf_counter() - began) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def overhead(engine: agts.StorageEngine, params: list[Params], repeat: int) -> None:
    """The per-call cost above the server's own time (planning + execution of the statement
    agts sends, by EXPLAIN ANALYZE), for small single-series questions; interleaved."""
    import re

    import psycopg

    from agts.db import Database, conninfo

    sent: list[tuple[str, list[Any]]] = []
    original = Database.fetch_arrow

    def capture(db: Any, query: str, values: Any = (), **kwargs: Any) -> Any:
        sent.append((query, list(values)))
        return original(db, query, values, **kwargs)

    questions: dict[str, Callable[[Params], pl.DataFrame]] = {
        "aggregated, 1 h per minute (60 rows)": lambda p: engine.query_aggregated(
            "usage_user", p.start, p.start + timedelta(hours=1), "1m", "max",
            {"hostname": p.host}),
        "raw, 1 h (360 rows)": lambda p: engine.query_metrics(
            "usage_user", p.start, p.start + timedelta(hours=1), {"hostname": p.host}),
        "raw, 2 h 47 min (1,000 rows)": lambda p: engine.query_metrics(
            "usage_user", p.start - timedelta(hours=1), p.start + timedelta(seconds=6000),
            {"hostname": p.host}),
    }
    print(f"\n{'small query':<40}{'agts ms':>9}{'server ms':>11}{'overhead ms':>13}")
    Database.fetch_arrow = capture  # type: ignore[method-assign]
    try:
        with psycopg.connect(conninfo(engine.config.database), autocommit=True) as conn:
            for name, ask in questions.items():
                ours, server = [], []
                for i in range(repeat * 4):
                    p = params[i % len(params)]
                    sent.clear()
                    began = time.perf_counter()
                    ask(p)
                    ours.append((time.perf_counter() - began) * 1000)
                    query, values = sent[-1]
                    text = re.sub(r"\$(\d+)", r"%(p\1)s", query.replace("%", "%%"))
                    plan = conn.execute("EXPLAIN (ANALYZE, SUMMARY) " + text,
                                        {f"p{j + 1}": v for j, v in enumerate(values)}).fetchall()
                    server.append(sum(float(r[0].split(":")[1].split()[0]) for r in plan
                                      if r[0].startswith(("Planning Time", "Execution Time"))))
                a, b = statistics.median(ours), statistics.median(server)
                print(f"{name:<40}{a:>9.2f}{b:>11.2f}{a - b:>13.2f}")
    finally:
        Database.fetch_arrow = original  # type: ignore[method-assign]
    print("overhead: series check, rollup state and statement in 2 round trips, the fetch and "
          "the frame (target <= 1 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--hours", type=float, default=12)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true",
                        help=f"load into (or reuse) database {REUSED!r} and keep it")
    parser.add_argument("--dsn", help="server (default: what agts.connect() reaches)")
    args = parser.parse_args()
    if args.hours < 2 or args.hosts < 1:
        parser.error("--hours must be at least 2 and --hosts at least 1")
    base = StorageConfig.from_dsn(args.dsn) if args.dsn else StorageConfig.load()
    base = base.with_overrides(query={"cache_ttl_sec": 0, "max_results": 10_000_000})
    wide = generate(args.hosts, args.hours, args.seed)
    print(f"{wide.height * len(METRICS):,} points: {args.hosts} hosts x {len(METRICS)} metrics "
          f"every 10 s for {args.hours:g} h")
    with ExitStack() as stack:
        if args.reuse:
            cfg = agts.create_database(REUSED, base, mark=MARK)
        else:
            cfg = stack.enter_context(agts.temporary_database(base, prefix="agts_bench_tsbs"))
        engine = stack.enter_context(agts.connect(cfg, migrate=True))
        stored = engine.metric_names()
        if stored.is_empty():
            print(f"loaded in {load(engine, wide):.1f} s (insert_metrics_batch)")
        elif int(stored.get_column("points_estimate").sum()) != wide.height * len(METRICS):
            raise SystemExit(f"database {REUSED!r} holds other data: drop it or leave out "
                             "--reuse")
        duck = duckdb.connect()
        duck.execute("SET TimeZone = 'UTC'")
        duck.register("cpu_frame", wide.to_arrow())
        duck.execute("CREATE TABLE cpu AS SELECT * FROM cpu_frame ORDER BY time")
        duck.unregister("cpu_frame")
        rng = random.Random(args.seed)
        end = T0 + timedelta(hours=args.hours)
        params = [Params(host=f"host_{rng.randrange(args.hosts)}",
                         start=T0 + timedelta(minutes=rng.randrange(int((args.hours - 1) * 60))),
                         end12=T0 + timedelta(hours=min(12.0, args.hours)),
                         before=end - timedelta(minutes=rng.randrange(5, 120)))
                  for _ in range(8)]
        if engine.server.edition == "apache":  # the raw-points phase: no rollups yet
            with engine.db.connection() as conn:
                conn.execute("TRUNCATE agts.rollup_1m, agts.rollup_1h")
                conn.execute("UPDATE agts.rollup_state SET watermark = NULL, refreshed_at = NULL")
        else:
            print("Community edition: the rollups are continuous aggregates, kept by their "
                  "policies; both phases may read them")
        contenders = Contenders(engine, duck, args.hours)
        stack.callback(contenders.close)
        cases = contenders.cases()
        results: dict[str, dict[str, float]] = {}
        for phase in ("raw points", "rollups"):
            if phase == "rollups":
                began = time.perf_counter()
                engine.refresh_rollups()
                print(f"rollups refreshed in {time.perf_counter() - began:.1f} s")
            for name, case in cases.items():
                same(name, case["agts"](params[0]), case["DuckDB"](params[0]))
                timed = measure(case if phase == "raw points" else {"agts": case["agts"]},
                                params, args.repeat)
                row = results.setdefault(name, {})
                row[f"agts ({phase})"] = timed["agts"]
                row.update({k: v for k, v in timed.items() if k != "agts"})
        report(results)
        overhead(engine, params, args.repeat)


def report(results: dict[str, dict[str, float]]) -> None:
    print()
    print(f"{'query':<24}{'agts raw':>10}{'agts+rollups':>14}{'hand SQL':>10}{'DuckDB':>9}"
          f"{'raw÷DuckDB':>12}{'best÷DuckDB':>13}{'best÷hand':>11}  target")
    for name, row in results.items():
        raw, rolled = row["agts (raw points)"], row["agts (rollups)"]
        best = min(raw, rolled)
        duck, hand = row["DuckDB"], row["hand SQL"]
        if name == "lastpoint":
            target = f"<= 4 ms: {'met' if best <= 4 else 'missed'}"
        else:
            goal = TARGETS[name]
            target = f"<= {goal:g}x DuckDB: {'met' if best / duck <= goal else 'missed'}"
        print(f"{name:<24}{raw:>10.2f}{rolled:>14.2f}{hand:>10.2f}{duck:>9.2f}"
              f"{raw / duck:>12.2f}{best / duck:>13.2f}{best / hand:>11.2f}  {target}")
    print("\nms, medians; every agts answer equal to DuckDB's (rel. 1e-9).")


if __name__ == "__main__":
    main()
