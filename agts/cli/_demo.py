"""``agts demo``: the main job, end to end, in a database of its own on the configured (or local
default) server."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from agts._engine import connect
from agts.cli._common import add_json_flag, config_from_args, print_json, usage_errors
from agts.cli._demo_job import DEFAULT_ARCHIVE_DIR, DemoOptions, DemoSummary, run_demo
from agts.db import create_database

__all__ = ["DEMO_DATABASE", "DEMO_MARK", "register", "render", "run"]

DEFAULT_POINTS = 1_000_000
#: The demo archives and drops the older half of its day: it runs only in a database it made,
#: which it marks with this comment.
DEMO_DATABASE = "agts_demo"
DEMO_MARK = "made by agts demo"
_MAX_SEED = 9_999


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo", help="run the main job end to end and print a summary",
        description=(
            "Generate one realistic day of a trading bot (metrics for 3 venues and 3 markets, "
            "orders with their lifecycles, fills, quotes, risk decisions), ingest it through the "
            "public API, derive positions and PnL and store 1-minute position snapshots, refresh "
            "the rollups and run aggregates, archive the older half of the day's metrics to "
            "Parquet (dropping it from the hot tier) and read it back with DuckDB, then print a "
            "summary.\n\n"
            "The day is 24 h from 12:00 UTC on 2026-01-01 + SEED days. Re-running with the same "
            "--seed and --points adds nothing (no duplicates); another seed adds another day. "
            "It archives and drops data, so it runs only in a database of its own on the "
            f"configured server: {DEMO_DATABASE} (or --database NAME), which it creates and marks; "
            "it refuses a database it did not make. The Parquet "
            f"files go to --archive-root, else ./{DEFAULT_ARCHIVE_DIR} (never archive.root: that "
            "is your database's cold tier)."
        ),
        epilog="Examples:\n  agts demo                          # 1M points, seed 0\n"
               "  agts demo --seed 1 --points 200000 # another (smaller) day\n"
               "  agts demo --database agts_demo --archive-root /tmp/agts-archive\n"
               "  agts demo --json --quiet",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=_seed, default=0,
                        help=f"which day to generate, 0..{_MAX_SEED} (default 0: 2026-01-01)")
    parser.add_argument("--points", type=_positive, default=DEFAULT_POINTS,
                        help=f"metric points to generate (default {DEFAULT_POINTS:,}; about "
                             "30 s end to end on 2 cores)")
    parser.add_argument("--orders", type=_positive, default=2_000,
                        help="orders placed over the day (default 2,000)")
    parser.add_argument("--database", metavar="NAME", default=DEMO_DATABASE,
                        help="the demo's own database on the configured server, created (and "
                             f"marked) if missing; an unmarked one is refused (default "
                             f"{DEMO_DATABASE})")
    parser.add_argument("--archive-root", metavar="DIR",
                        help=f"cold tier root: a directory or s3://bucket/prefix of the demo's "
                             f"own (default ./{DEFAULT_ARCHIVE_DIR})")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or step lines, only the summary")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _seed(text: str) -> int:
    if not text.isdigit() or int(text) > _MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be an integer 0..{_MAX_SEED}, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    with usage_errors("--database"):  # a name that is no name, or a database it did not make
        config = create_database(args.database, config, mark=DEMO_MARK)
    quiet = args.quiet or args.json
    options = DemoOptions(seed=args.seed, points=args.points, orders=args.orders,
                          archive_root=args.archive_root, progress=False if quiet else None)

    def announce(line: str) -> None:
        if not quiet:
            print(f"· {line}", file=sys.stderr, flush=True)

    with connect(config) as engine:
        announce(f"connected to {engine.config.database.describe()} "
                 f"(TimescaleDB {engine.server.timescaledb_version}, {engine.server.edition} "
                 "edition)")
        summary = run_demo(engine, options, announce)
    if args.json:
        print_json(asdict(summary))
    else:
        print(render(summary))
    return 0


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:+,.2f}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def render(s: DemoSummary) -> str:
    """The human-readable summary."""
    out = [f"agts demo: seed {s.seed}, {s.start:%Y-%m-%d %H:%M} → {s.end:%Y-%m-%d %H:%M} UTC, "
           f"{s.database} ({s.edition} edition)", "",
           f"{'table':<20}{'generated':>12}{'new now':>12}{'hot rows':>12}"]
    for table in ("metrics", "market_quotes", "orders", "order_events", "fills",
                  "position_snapshots", "risk_decisions"):
        out.append(f"{table:<20}{_n(s.generated.get(table, 0)):>12}"
                   f"{_n(s.new_rows.get(table, 0)):>12}{_n(s.stored.get(table, 0)):>12}")
    out.append("")
    if s.ingest_points_per_sec:
        out.append(f"ingest      {_n(s.new_rows['metrics'])} points in "
                   f"{s.steps_sec['ingest_metrics']:.1f} s = {_n(s.ingest_points_per_sec)} points/s")
    else:
        out.append("ingest      every metric batch was already stored (same seed): nothing written")
    execution = sum(v for k, v in s.new_rows.items() if k not in {"metrics", "position_snapshots"})
    out.append(f"execution   {execution:,} new rows (orders, events, fills, quotes, risk decisions) "
               f"in {s.steps_sec['store_execution']:.1f} s")
    out.append("")
    out.append(f"{'PnL (USD)':<10}{'fills':>7}{'volume':>14}{'position':>12}{'realized':>12}"
               f"{'unrealized':>12}{'fees':>10}{'net':>12}")
    for p in s.pnl:
        out.append(f"{p['market']:<10}{p['fills'] or 0:>7}{_n(p['volume'] or 0):>14}"
                   f"{p['size']:>12.4f}{_money(p['realized_pnl']):>12}"
                   f"{_money(p['unrealized_pnl']):>12}{p['fees']:>10,.2f}{_money(p['net_pnl']):>12}")
    out.append(f"{'total':<10}{'':>7}{'':>14}{'':>12}"
               f"{_money(sum(p['realized_pnl'] for p in s.pnl)):>12}"
               f"{_money(sum(p['unrealized_pnl'] for p in s.pnl)):>12}"
               f"{sum(p['fees'] for p in s.pnl):>10,.2f}"
               f"{_money(sum(p['net_pnl'] for p in s.pnl)):>12}")
    out.append(f"snapshots   {s.generated.get('position_snapshots', 0):,} one-minute position "
               f"snapshots; reconciled against the fills: {s.reconcile_differences} difference(s)")
    out.append("")
    for a in s.aggregates:
        out.append(f"aggregate   {a['query']}: {a['rows']:,} {a.get('unit', 'rows')} in {a['ms']:.0f} ms")
        for venue, p99 in a.get("by", []):
            out.append(f"              {venue:<10} worst hourly p99 {p99:.1f} ms")
    out.append("")
    arc = s.archive
    if arc.get("files"):
        out.append(f"archive     {arc['rows']:,} metric points of {arc['range'][0]:%Y-%m-%d} in "
                   f"{arc['files']} Parquet file(s), {_size(arc['bytes'])}, under {arc['root']}")
        if not arc["files_written_now"]:
            out.append("            (archived by an earlier run; nothing to do now)")
        out.append(f"duckdb      {arc['duckdb_points']:,} points read back in {arc['duckdb_ms']:.0f} ms "
                   f"({len(arc['duckdb_by_metric'])} metrics)")
        total = arc["hot_rows"] + arc["cold_rows"]
        out.append(f"hot ∪ cold  {arc['hot_rows']:,} hot + {arc['cold_rows']:,} cold = {total:,} "
                   f"points of the day")
    else:
        reasons = "; ".join(f"{w}: {why}" for w, why in arc.get("skipped", [])) or "no whole chunk"
        out.append(f"archive     nothing archived ({reasons})")
    out.append("")
    out.append(f"elapsed     {s.elapsed_sec:.1f} s")
    return "\n".join(out)

