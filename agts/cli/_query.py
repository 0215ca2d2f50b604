"""``agts query``: one metric's points or time-bucketed aggregates, to the terminal or a file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import polars as pl

from agts.cli._common import add_json_flag, engine_from_args, print_json
from agts.errors import ResultTooLargeError

__all__ = ["register", "run"]

_FORMATS = ("table", "csv", "parquet", "json")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "query", help="a metric's points or aggregates as a table, CSV, Parquet or JSON",
        description=(
            "Read one metric in [--start, --end) (ISO 8601; naive times are UTC; default: the "
            "last hour). Without --bucket: the raw points (labels as a struct, or JSON text in "
            "CSV). With --bucket: one row per bucket (and --group-by label values) with one "
            "column per --agg. To the terminal, results are capped at query.max_results rows; "
            "--output streams any number of rows to a file."
        ),
        epilog="Examples:\n"
               "  agts query latency_ms --start 2026-01-02 --end 2026-01-03 --labels venue=binance\n"
               "  agts query latency_ms --start 2026-01-02 --end 2026-01-03 --bucket 1h "
               "--agg avg,p99 --group-by venue\n"
               "  agts query price_mid --start 2026-01-02 --end 2026-01-03 --output mid.parquet\n"
               "  agts query fill_rate --start 2026-01-02T00:00 --end 2026-01-02T06:00 --bucket 1m "
               "--agg avg --format csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("metric", metavar="METRIC", help="metric name")
    parser.add_argument("--start", type=_when,
                        help="range start, ISO 8601 (default: --end minus 1 hour)")
    parser.add_argument("--end", type=_when, help="range end (exclusive), ISO 8601 (default: now)")
    parser.add_argument("--labels", nargs="+", metavar="KEY=VALUE", type=_label, default=[],
                        help="exact label filters; a key given twice matches any of its values")
    parser.add_argument("--bucket", metavar="WIDTH", help="aggregate into buckets: 15s, 1m, 1h, 1d")
    parser.add_argument("--agg", default="avg", metavar="LIST",
                        help="aggregations with --bucket, comma-separated: avg, min, max, sum, "
                             "count, first, last, stddev, median, p50, p99, p99.9 (default avg)")
    parser.add_argument("--group-by", metavar="KEYS", help="label keys, comma-separated (--bucket)")
    parser.add_argument("--fill", choices=["null", "forward"], help="add empty buckets (--bucket)")
    parser.add_argument("--format", choices=_FORMATS,
                        help="output format (default: from --output's extension, else table)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N raw points")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date or time like 2026-01-02T12:00Z, got {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"labels must look like key=value, got {text!r}")
    return key, value


def _format(args: argparse.Namespace) -> str:
    if args.json:
        return "json"
    if args.format:
        return str(args.format)
    if args.output:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        return {"parquet": "parquet", "pq": "parquet", "csv": "csv", "json": "json"}.get(
            suffix, "table")
    return "table"


def _filters(pairs: list[tuple[str, str]]) -> tuple[dict[str, str] | None, dict[str, list[str]] | None]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    exact = {k: v[0] for k, v in grouped.items() if len(v) == 1}
    many = {k: v for k, v in grouped.items() if len(v) > 1}
    return exact or None, many or None


def run(args: argparse.Namespace) -> int:
    fmt = _format(args)
    if fmt == "parquet" and not args.output:
        print("agts query: --format parquet needs --output FILE", file=sys.stderr)
        return 2
    if args.bucket is None and (args.group_by or args.fill):
        print("agts query: --group-by and --fill need --bucket", file=sys.stderr)
        return 2
    end: datetime = args.end or datetime.now(UTC)
    start: datetime = args.start or end - timedelta(hours=1)
    try:
        rows = _query(args, start, end, fmt)
    except ResultTooLargeError as exc:
        raise ResultTooLargeError(f"{exc}; from the command line: --output FILE streams every "
                                  "row, --limit N shows the first N") from exc
    if args.output:
        print(f"{rows:,} rows written to {args.output}", file=sys.stderr)
    return 0


def _query(args: argparse.Namespace, start: Any, end: Any, fmt: str) -> int:
    labels, labels_in = _filters(args.labels)
    with engine_from_args(args) as engine:
        frames: Iterable[pl.DataFrame]
        if args.bucket is not None:
            group_by = [g for g in (args.group_by or "").split(",") if g]
            aggs = [a.strip() for a in args.agg.split(",") if a.strip()]
            frames = [engine.query_aggregated(args.metric, start, end, args.bucket, aggs, labels,
                                              labels_in=labels_in, group_by=group_by or None,
                                              fill=args.fill)]
        elif args.output and args.limit is None:
            frames = engine.query_metrics(args.metric, start, end, labels, labels_in=labels_in,
                                          iter_batches=True)
        else:
            frames = [engine.query_metrics(args.metric, start, end, labels, labels_in=labels_in,
                                           limit=args.limit)]
        return _write(frames, fmt, args.output)


def _for_text(frame: pl.DataFrame) -> pl.DataFrame:
    if "labels" in frame.columns and isinstance(frame.schema["labels"], pl.Struct):
        return frame.with_columns(pl.col("labels").struct.json_encode())
    return frame


def _write(frames: Iterable[pl.DataFrame], fmt: str, output: str | None) -> int:
    """Write the frames in ``fmt`` to ``output`` (or stdout); return the row count."""
    rows = 0
    if fmt == "parquet":
        assert output is not None
        import pyarrow.parquet as pq

        writer: pq.ParquetWriter | None = None
        try:
            for frame in frames:
                table = frame.to_arrow()
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(output, schema, compression="zstd")
                writer.write_table(table.cast(schema))
                rows += frame.height
            if writer is None:  # no rows at all: still write a (schema-less) empty file
                pl.DataFrame().write_parquet(output)
        finally:
            if writer is not None:
                writer.close()
        return rows
    if fmt == "csv":
        with _open(output) as out:
            for i, frame in enumerate(frames):
                out.write(_for_text(frame).write_csv(include_header=i == 0))
                rows += frame.height
        return rows
    collected = pl.concat(list(frames), how="diagonal_relaxed")
    if fmt == "json":
        if output:
            with _open(output) as out:
                out.write(_for_text(collected).write_json())
        else:
            print_json(collected.to_dicts())
        return collected.height
    with _open(output) as out, pl.Config(tbl_rows=50, tbl_cols=-1, tbl_width_chars=160,
                                         fmt_str_lengths=80):
        out.write(f"{_for_text(collected)}\n{collected.height:,} rows\n")
    return collected.height


@contextmanager
def _open(path: str | None) -> Iterator[TextIO]:
    """A text file for ``path``, or stdout (left open) when ``path`` is None."""
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        yield handle
