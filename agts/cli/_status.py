"""``agts status``: server, edition, schema version and table sizes."""

from __future__ import annotations

import argparse
from typing import Any

from agts._migrations import MigrationRunner
from agts.cli._common import add_json_flag, engine_from_args, print_json


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="server, TimescaleDB edition, schema version and table sizes",
        epilog="Examples:\n  agts status\n  agts status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    parser.set_defaults(func=run)


def collect(engine: Any) -> dict[str, Any]:
    """The status report as a dict (also used by the demo)."""
    runner = MigrationRunner(engine.db)
    current = runner.current_version()
    with engine.db.connection() as conn:
        rows = conn.execute(
            """
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
        ).fetchall()
    server = engine.server
    return {
        "database": engine.config.database.describe(),
        "postgres_version": server.postgres_version,
        "timescaledb_version": server.timescaledb_version,
        "edition": server.edition,
        "schema_version": current,
        "latest_version": runner.latest,
        "tables": [{"name": r[0], "hypertable": r[1], "bytes": int(r[2] or 0)} for r in rows],
    }


def run(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        report = collect(engine)
    if args.json:
        print_json(report)
        return 0
    print(f"database        {report['database']}")
    print(f"postgres        {report['postgres_version']}")
    print(f"timescaledb     {report['timescaledb_version']} ({report['edition']} edition)")
    pending = report["latest_version"] - report["schema_version"]
    note = f" ({pending} pending: run 'agts migrate up')" if pending > 0 else " (up to date)"
    print(f"schema version  {report['schema_version']}{note}")
    if report["tables"]:
        print("tables")
        for t in report["tables"]:
            kind = "hypertable" if t["hypertable"] else "table"
            print(f"  {t['name']:<28} {kind:<10} {_size(t['bytes']):>10}")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
