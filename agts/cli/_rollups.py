"""``agts rollups refresh`` (once, for cron, or ``--every 1m`` as a service) and ``agts rollups
status``."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from agts.cli._common import (
    add_json_flag,
    engine_from_args,
    parse_interval,
    print_json,
    repeat,
    require_schema,
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "rollups", help="the 1-minute and 1-hour rollups: refresh them, show how fresh they are",
        epilog="Examples:\n  agts rollups refresh              # once (cron: * * * * * agts rollups "
               "refresh)\n  agts rollups refresh --every 1m   # as a long-running service"
               "\n  agts rollups status --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    refresh = actions.add_parser("refresh", help="bring both rollups up to date (or every INTERVAL)")
    refresh.add_argument("--every", metavar="INTERVAL", type=parse_interval,
                         help="repeat every INTERVAL (30s, 1m, 1h) until interrupted")
    add_json_flag(refresh)
    refresh.set_defaults(func=run_refresh)
    state = actions.add_parser("status", help="watermark, lag and pending batches per rollup")
    add_json_flag(state)
    state.set_defaults(func=run_status)


def run_refresh(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)

        def step() -> None:
            began = time.perf_counter()
            done = engine.refresh_rollups()
            seconds = time.perf_counter() - began
            if args.json:  # one line per round: JSON Lines for a service's log
                print(json.dumps({"ranges_materialized": done, "seconds": round(seconds, 3)},
                                 sort_keys=True), flush=True)
            else:
                parts = ", ".join(f"{name} {n} range(s)" for name, n in sorted(done.items()))
                print(f"refreshed: {parts} in {seconds:.2f}s", flush=True)

        return repeat(args.every, step, what="rollup refresh")


def run_status(args: argparse.Namespace) -> int:
    with engine_from_args(args) as engine:
        require_schema(engine)
        frame = engine.rollup_status()
    if args.json:
        print_json([{k: (v.total_seconds() if hasattr(v, "total_seconds") else v)
                     for k, v in row.items()} for row in frame.to_dicts()])
        return 0
    for row in frame.iter_rows(named=True):
        watermark = row["watermark"].isoformat() if row["watermark"] else "never refreshed"
        lag = f", lag {row['lag']}" if row["lag"] is not None else ""
        print(f"{row['rollup']:<10} ({row['kind']}): materialized before {watermark}{lag}; "
              f"{row['pending_batches']} ingest batch(es) pending")
    return 0
