"""``agts status``: server, edition, schema version and table sizes.

A database without TimescaleDB or without agts' schema is reported as such (schema version 0),
then the command exits 1 with ``agts: error: ...`` saying to run ``agts migrate up``; it changes
nothing in the database.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agts._migrations import MigrationRunner
from agts.cli._common import (
    add_json_flag,
    engine_from_args,
    human_size,
    missing_schema,
    print_json,
    schema_version,
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="server, TimescaleDB edition, schema version and table sizes",
        epilog="Examples:\n  agts status\n  agts status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


#: agts' tables with their sizes (a hypertable's includes its chunks).
_TABLES = """
    SELECT c.relname,
           COALESCE(h.hypertable_name IS NOT NULL, false),
           CASE WHEN h.hypertable_name IS NOT NULL
                THEN hypertable_size(format('%I.%I', n.nspname, c.relname)::regclass)
                ELSE pg_total_relation_size(c.oid) END
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN timescaledb_information.hypertables h
           ON h.hypertable_schema = n.nspname AND h.hypertable_name = c.relname
    WHERE n.nspname = 'agts' AND c.relkind IN ('r', 'p')
    ORDER BY 1
"""
#: Without TimescaleDB (its catalog views are missing): the plain tables, if any.
_PLAIN_TABLES = """
    SELECT c.relname, false, pg_total_relation_size(c.oid)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'agts' AND c.relkind IN ('r', 'p')
    ORDER BY 1
"""


def collect(engine: Any) -> dict[str, Any]:
    """The status report as a dict (also used by the demo). Reads only: a database without
    agts' schema reports version 0."""
    latest = MigrationRunner(engine.db).latest  # the migration files, not the database
    current = schema_version(engine)
    with engine.db.connection() as conn:
        query = _TABLES if engine.server.timescaledb_installed else _PLAIN_TABLES
        rows = conn.execute(query).fetchall()
    server = engine.server
    return {
        "database": engine.config.database.describe(),
        "postgres_version": server.postgres_version,
        "timescaledb_version": server.timescaledb_version,
        "edition": server.edition,
        "schema_version": current,
        "timescaledb_installed": server.timescaledb_installed,
        "latest_version": latest,
        "tables": [{"name": r[0], "hypertable": r[1], "bytes": int(r[2] or 0)} for r in rows],
        "replicas": [
            {"replica": r.replica, "state": r.state, "lag_sec": r.lag_sec,
             "replay_lsn": r.replay_lsn, "error": r.error} for r in engine.db.replica_status()],
    }


def run(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        report = collect(engine)
        problem = missing_schema(engine)
    if args.json:
        print_json(report)
    else:
        _print(report)
    if problem:
        sys.stdout.flush()
        print(f"agts: error: {problem}", file=sys.stderr)
        return 1
    return 0


def _print(report: dict[str, Any]) -> None:
    print(f"database        {report['database']}")
    print(f"postgres        {report['postgres_version']}")
    installed = "" if report["timescaledb_installed"] else ", not installed in this database"
    print(f"timescaledb     {report['timescaledb_version']} ({report['edition']} edition{installed})")
    pending = report["latest_version"] - report["schema_version"]
    note = (f" ({pending} pending: run 'agts migrate up')" if pending > 0 else " (up to date)"
            if pending == 0 else f" (newer than this agts, which knows {report['latest_version']})")
    print(f"schema version  {report['schema_version']}{note}")
    if report["tables"]:
        print("tables")
        for t in report["tables"]:
            kind = "hypertable" if t["hypertable"] else "table"
            print(f"  {t['name']:<28} {kind:<10} {human_size(t['bytes']):>10}")
    if report["replicas"]:
        print("replicas")
        for r in report["replicas"]:
            lag = "lag unknown" if r["lag_sec"] is None else f"lag <= {r['lag_sec']:.3f}s"
            why = f" ({r['error']})" if r["error"] else ""
            print(f"  {r['replica']:<40} {r['state']:<14} {lag}{why}")
