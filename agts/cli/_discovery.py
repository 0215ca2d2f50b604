"""``agts series`` and ``agts labels``: what exists (metric names, series, label keys, values)."""

from __future__ import annotations

import argparse
from typing import Any

import polars as pl

from agts.cli._common import (
    UsageError,
    add_json_flag,
    engine_from_args,
    iso,
    print_json,
    print_table,
    require_schema,
    usage_errors,
    warn,
)


def register(sub: Any) -> None:
    series = sub.add_parser(
        "series", help="metric names, or the series of a metric (labels, first/last point, size)",
        description="Without METRIC: every metric with its number of series, first and last "
                    "timestamp and an estimate of its points. With METRIC: one line per series "
                    "(label set), optionally only those matching --labels.",
        epilog="Examples:\n  agts series\n  agts series latency_ms --labels venue=binance\n"
               "  agts series latency_ms --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    series.add_argument("metric", nargs="?", help="a metric name (default: list the metrics)")
    series.add_argument("--labels", nargs="+", metavar="KEY=VALUE", type=_label, default=[],
                        help="only series with these labels (a key twice: any of its values)")
    add_json_flag(series)
    series.set_defaults(func=run_series)

    labels = sub.add_parser(
        "labels", help="label keys, or the values of one label key",
        description="Without KEY: every label key with the number of series and metrics that "
                    "have it. With KEY: its values and how many series have each.",
        epilog="Examples:\n  agts labels\n  agts labels venue --metric latency_ms\n"
               "  agts labels venue --labels region=eu",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    labels.add_argument("key", nargs="?", help="a label key (default: list the keys)")
    labels.add_argument("--metric", action="append", metavar="NAME",
                        help="only series of this metric (repeat for several)")
    labels.add_argument("--labels", nargs="+", metavar="KEY=VALUE", type=_label, default=[],
                        help="only series with these labels")
    add_json_flag(labels)
    labels.set_defaults(func=run_labels)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"labels must look like key=value, got {text!r}")
    return key, value


def _filters(pairs: list[tuple[str, str]]) -> tuple[dict[str, str], dict[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return ({k: v[0] for k, v in grouped.items() if len(v) == 1},
            {k: v for k, v in grouped.items() if len(v) > 1})


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Rows for --json, timestamps written as every agts output writes them."""
    return [{k: (iso(v) if v is not None else None) if k.endswith("_timestamp") else v
             for k, v in row.items()} for row in frame.iter_rows(named=True)]


def run_series(args: argparse.Namespace) -> int:
    labels, labels_in = _filters(args.labels)
    if args.metric is None and args.labels:
        raise UsageError("--labels needs a METRIC (agts series METRIC --labels k=v)")
    with engine_from_args(args) as engine:
        require_schema(engine)
        if args.metric is None:
            frame = engine.metric_names()
            if args.json:
                print_json(_rows(frame))
            else:
                print_table(["metric", "series", "first", "last", "points (est.)"], [
                    (r["metric_name"], f"{r['series']:,}", iso(r["first_timestamp"]),
                     iso(r["last_timestamp"]), f"{r['points_estimate']:,}")
                    for r in frame.iter_rows(named=True)], left=4)
            if frame.is_empty():
                warn("no metric is stored yet")
            return 0
        with usage_errors():
            frame = engine.series(args.metric, labels or None, labels_in=labels_in or None)
        if args.json:
            print_json(_rows(frame))
        else:
            shown = frame.with_columns(pl.col("labels").struct.json_encode())
            print_table(["series_id", "labels", "first", "last", "points (est.)"], [
                (r["series_id"], r["labels"], iso(r["first_timestamp"]),
                 iso(r["last_timestamp"]), f"{r['points_estimate']:,}")
                for r in shown.iter_rows(named=True)], left=4)
        if frame.is_empty():
            known = engine.metric_names().get_column("metric_name").to_list()
            warn(f"no series of {args.metric!r} matches" if args.metric in known
                 else f"no metric {args.metric!r} is stored (see 'agts series')")
    return 0


def run_labels(args: argparse.Namespace) -> int:
    labels, labels_in = _filters(args.labels)
    if args.key is None and args.labels:
        raise UsageError("--labels needs a KEY (agts labels KEY --labels k=v)")
    with engine_from_args(args) as engine:
        require_schema(engine)
        with usage_errors():
            if args.key is None:
                frame = engine.label_keys(args.metric)
            else:
                frame = engine.label_values(args.key, args.metric, labels or None,
                                            labels_in=labels_in or None)
        if args.json:
            print_json(frame.to_dicts())
        elif args.key is None:
            print_table(["key", "series", "metrics"], frame.rows())
        else:
            print_table(["value", "series"], frame.rows())
        if frame.is_empty():
            warn(f"no series has the label {args.key!r}" if args.key else "no label is used")
    return 0
