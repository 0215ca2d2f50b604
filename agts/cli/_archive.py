"""``agts archive``: export to the cold tier, restore, verify, upgrade, list the manifest."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

import polars as pl

from agts.cli._common import (
    add_json_flag,
    engine_from_args,
    human_size,
    iso,
    print_json,
    print_table,
    require_schema,
    usage_errors,
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "archive", help="Parquet cold tier: export (and drop), restore, verify, list",
        epilog="Examples:\n  agts archive export metrics --end 2026-01-01 --drop"
               "\n  agts archive restore metrics 2025-12-01 2025-12-02"
               "\n  agts archive verify --table metrics"
               "\n  agts archive list --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="export whole chunks; --drop removes them once verified")
    export.add_argument("table", help="metrics, orders, fills, ... (a hypertable of schema agts)")
    export.add_argument("--start", help="ISO 8601 (naive = UTC); default: the oldest chunk")
    export.add_argument("--end", help="ISO 8601 (naive = UTC); default: now")
    export.add_argument("--drop", action="store_true", help="drop verified chunks from the hot tier")
    export.add_argument("--root", help="archive root (directory or s3://bucket/prefix); "
                        "default archive.root")
    add_json_flag(export)
    export.set_defaults(func=run_export)

    restore = actions.add_parser("restore", help="bring archived ranges back into the hot tier")
    restore.add_argument("table")
    restore.add_argument("start")
    restore.add_argument("end")
    add_json_flag(restore)
    restore.set_defaults(func=run_restore)

    verify = actions.add_parser(
        "verify", help="read every archived file back and check it against the manifest "
        "(exit 1 if one is missing, replaced or damaged)")
    verify.add_argument("--table", help="only this archive table")
    add_json_flag(verify)
    verify.set_defaults(func=run_verify)

    upgrade = actions.add_parser(
        "upgrade", help="register archives written before Iceberg in the Iceberg tables "
        "(checked by size, sha256 and rows; no data rewritten)")
    upgrade.add_argument("--table", help="only this archive table")
    add_json_flag(upgrade)
    upgrade.set_defaults(func=run_upgrade)

    listing = actions.add_parser("list", help="the manifest: every file with its state")
    listing.add_argument("--table", help="only this archive table")
    add_json_flag(listing)
    listing.set_defaults(func=run_list)


def run_export(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        with usage_errors():  # the table, the range and the root come from the command line
            report = engine.archive(args.table, args.start, args.end, drop=args.drop,
                                    root=args.root)
    if args.json:
        print_json(asdict(report))
        return 1 if report.failed else 0
    print(f"{report.table}: exported {report.units_exported} chunk range(s), {report.rows_exported} "
          f"rows in {report.files_written} file(s) ({report.bytes_written} bytes); verified "
          f"{report.units_verified}; dropped {report.units_dropped} ({report.rows_dropped} rows) "
          f"in {report.duration_sec:.2f}s")
    for what, why in report.skipped:
        print(f"  skipped {what}: {why}")
    for what, why in report.failed:
        print(f"agts: failed {what}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


def run_restore(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        with usage_errors():
            rows = engine.restore(args.table, args.start, args.end)
    if args.json:
        print_json({"table": args.table, "rows_restored": rows})
    else:
        print(f"{args.table}: restored {rows} rows")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        checked = engine.verify_cold(args.table)
    bad = checked.filter(pl.col("problem").is_not_null())
    if args.json:
        print_json({"files_checked": checked.height, "problems": bad.to_dicts()})
    else:
        for row in bad.iter_rows(named=True):
            print(f"{row['table_name']}: {row['problem']}", file=sys.stderr)
        print(f"{checked.height} file(s) checked, {bad.height} with a problem")
    return 1 if bad.height else 0


def run_upgrade(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        with usage_errors():
            done = engine.upgrade_cold(args.table)
    if args.json:
        print_json(done.to_dicts())
        return 0
    for row in done.iter_rows(named=True):
        print(f"{row['table_name']}: {row['files']} file(s), {row['rows']:,} rows in Iceberg "
              f"snapshot {row['snapshot_id']}")
    print(f"{done.height} table(s) registered")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        rows = _manifest(engine, args.table)
        configured = engine.config.archive.root
    if args.json:
        print_json(rows)
        return 0
    roots = sorted({str(r["root"]) for r in rows}) or [configured or "(none: archive.root is not set)"]
    print(f"archive root{'s' if len(roots) > 1 else ''}: {', '.join(roots)}")
    for root in sorted({str(r["root"]) for r in rows}):
        listed = [r for r in rows if str(r["root"]) == root]
        if len(roots) > 1:
            print(f"{root}:")
        print_table(["state", "rows", "size", "from", "to", "path"], [
            [r["state"], f"{r['rows']:,}", human_size(r["bytes"]), iso(r["min_time"]),
             iso(r["max_time"]), r["path"]] for r in listed], indent="  " if len(roots) > 1 else "")
    print(f"{len(rows)} file(s)")
    return 0


def _manifest(engine: Any, table: str | None) -> list[dict[str, Any]]:
    with engine.db.connection() as conn:
        cur = conn.execute(
            "SELECT table_name, path, state, rows, bytes, min_time, max_time, sha256, root "
            "FROM agts.archive_manifest WHERE %s::text IS NULL OR table_name = %s "
            "ORDER BY table_name, path", [table, table])
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
