"""``agts retention run`` (once, for cron, or ``--every 1h`` as a service) and ``agts storage``."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict
from typing import Any

from agts.cli._common import (
    add_json_flag,
    engine_from_args,
    human_size,
    iso,
    parse_interval,
    positive_int,
    print_json,
    print_table,
    repeat,
    require_schema,
)


def register(sub: Any) -> None:
    retention = sub.add_parser(
        "retention", help="apply the retention policy: compress, archive, drop expired chunks",
        epilog="Examples:\n  agts retention run              # once (cron: 0 * * * * agts retention run)"
               "\n  agts retention run --every 1h   # as a long-running service"
               "\n  agts retention run --dry-run --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = retention.add_subparsers(dest="action", metavar="ACTION", required=True)
    run_parser = actions.add_parser("run", help="run the policy now (or every INTERVAL)")
    run_parser.add_argument("--every", metavar="INTERVAL", type=parse_interval,
                            help="repeat every INTERVAL (30m, 1h, 1d) until interrupted")
    run_parser.add_argument("--dry-run", action="store_true", help="report, change nothing")
    add_json_flag(run_parser)
    run_parser.set_defaults(func=run)

    storage = sub.add_parser(
        "storage", help="sizes per table and tier, compression ratio, growth and projection",
        epilog="Examples:\n  agts storage\n  agts storage --by chunk --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    storage.add_argument("--by", choices=["table", "chunk"], default="table")
    storage.add_argument("--growth-days", type=positive_int, default=7, metavar="N",
                         help="measure growth over the last N days (default 7)")
    add_json_flag(storage)
    storage.set_defaults(func=run_storage)


def _print_report(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(asdict(report))
        return
    mode = " (dry run)" if report.dry_run else ""
    print(f"retention at {report.now.isoformat()} on {report.edition}{mode}:")
    print(f"  compressed {report.chunks_compressed} chunk(s); archived {report.chunks_archived} "
          f"({report.rows_archived} rows); dropped {report.chunks_dropped} ({report.rows_dropped} "
          f"rows); per-metric deletes {report.rows_deleted} rows")
    print(f"  bytes {report.bytes_before} -> {report.bytes_after} in {report.duration_sec:.2f}s")
    if report.rollups_refreshed:
        parts = ", ".join(f"{k} {v} range(s)" for k, v in sorted(report.rollups_refreshed.items()))
        print(f"  rollups refreshed first: {parts}")
    for job in report.native_jobs:
        print(f"  job: {job}")
    for what, why in report.skipped:
        print(f"  skipped {what}: {why}")


def run(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        return repeat(args.every, lambda: _print_report(
            engine.run_retention(dry_run=args.dry_run), args.json), what="retention run")


def run_storage(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        frame = engine.storage_report(by=args.by, growth_days=args.growth_days)
    if args.json:
        print_json(frame.to_dicts())
        return 0
    rows = frame.to_dicts()
    if args.by == "chunk":
        print_table(["table", "tier", "chunk", "from", "to", "rows", "size"], [
            [r["table"], r["tier"], r["chunk"], iso(r["range_start"]), iso(r["range_end"]),
             f"{r['rows']:,}", human_size(r["bytes"])] for r in rows], left=5)
        print(f"{len(rows)} chunk(s) and archive unit(s)")
        return 0
    print_table(["table", "hot", "warm", "cold", "total", "compression", "cold rows", "growth/day",
                 "retention", "in 30 days", "steady state"], [
        [r["table"], human_size(r["hot_bytes"]), human_size(r["warm_bytes"]),
         human_size(r["cold_bytes"]), human_size(r["total_bytes"]),
         _ratio(r["compression_ratio"]),
         f"{r['cold_rows'] or 0:,}", human_size(r["growth_bytes_per_day"]),
         "-" if r["retention_days"] is None else f"{r['retention_days']} d",
         human_size(r["projected_bytes_30d"]), human_size(r["steady_state_bytes"])]
        for r in rows])
    print(f"growth over the last {args.growth_days} day(s); 'in 30 days': hot + warm bytes "
          "without retention; 'steady state': growth x retention days")
    return 0


def _ratio(value: float | None) -> str:
    """A compression ratio, ``-`` where there is nothing compressed (null or NaN)."""
    return "-" if value is None or math.isnan(value) else f"{value:.1f}x"
