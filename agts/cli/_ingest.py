"""``agts ingest``: Parquet, CSV or Arrow IPC files into metrics or an execution table."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from agts.cli._common import add_json_flag, engine_from_args, print_json
from agts.errors import ValidationError
from agts.execution import ExecutionStore

__all__ = ["TARGETS", "register", "run"]

#: ``--into`` choices: metrics and the execution tables, in the order they may depend on each other.
TARGETS = ("metrics", "orders", "order_events", "fills", "quotes", "risk_decisions",
           "position_snapshots")
_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".arrow": "arrow",
            ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow"}
_FLOATS = ("value", "price", "size", "fee", "bid", "ask", "mid", "filled_size",
           "avg_entry_price", "unrealized_pnl", "realized_pnl")
_NAMESPACE = uuid.UUID("0f6c1a53-7f3e-4d0a-8b8e-0b7f3f3e2a11")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "ingest", help="load Parquet / CSV / Arrow IPC files into metrics or execution tables",
        description=(
            "Store the rows of each FILE through the public API: metric points with "
            "insert_metrics_batch (columns timestamp, metric_name, value, labels: a struct or map "
            "column, or JSON text in CSV), execution records with ExecutionStore (the columns of "
            "agts.Order, agts.Fill, ...; order events: timestamp, order_id, status[, filled_size, "
            "reason]). Files are read in batches of --batch-size rows; each batch is one "
            "transaction. Storing the same rows again adds nothing. Timestamps without an offset "
            "are UTC. Give orders before their fills and events."
        ),
        epilog="Examples:\n  agts ingest day.parquet --into metrics\n"
               "  agts ingest orders.csv --into orders && agts ingest fills.csv --into fills\n"
               "  agts ingest quotes.arrow --into quotes --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="Parquet, CSV or Arrow IPC files")
    parser.add_argument("--into", required=True, choices=TARGETS, help="the destination table")
    parser.add_argument("--format", choices=["parquet", "csv", "arrow"],
                        help="file format (default: from the extension)")
    parser.add_argument("--batch-size", type=int, default=100_000, metavar="N",
                        help="rows per batch (default 100,000)")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="metrics: refuse a batch at its first invalid row (raise, default) "
                             "or store the valid rows and report the others (skip)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def _file_format(path: Path, given: str | None) -> str:
    if given:
        return given
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot tell the format of {str(path)!r} from its extension "
                         f"(known: {sorted(_FORMATS)!r}); pass --format")
    return fmt


def _rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    return -1  # unknown until read


def _batches(path: Path, fmt: str, size: int) -> Iterator[pl.DataFrame]:
    """The file's rows as frames of at most ``size`` rows."""
    if fmt == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
            yield _frame(pa.Table.from_batches([batch]))
        return
    if fmt == "arrow":
        with pa.memory_map(str(path)) as source:
            try:
                table = pa.ipc.open_file(source).read_all()
            except pa.ArrowInvalid:
                source.seek(0)
                table = pa.ipc.open_stream(source).read_all()
        frame = _frame(table)
    else:
        frame = _read_csv(path)
    for offset in range(0, max(frame.height, 1), size):
        yield frame.slice(offset, size)


def _read_csv(path: Path) -> pl.DataFrame:
    """A CSV file with its numbers as Float64 and its ``timestamp`` column parsed as UTC."""
    head = pl.read_csv(path, n_rows=0)
    types: dict[str, Any] = {c: pl.Float64 for c in _FLOATS if c in head.columns}
    if "timestamp" in head.columns:
        types["timestamp"] = pl.String
    frame = pl.read_csv(path, schema_overrides=types)
    if "timestamp" not in frame.columns:
        return frame
    try:
        return frame.with_columns(_iso_utc(pl.col("timestamp")))
    except pl.exceptions.PolarsError as exc:
        bad = frame.with_row_index("row").filter(
            _iso_utc(pl.col("timestamp"), strict=False).is_null()
            & pl.col("timestamp").is_not_null()).head(1)
        raise ValidationError(
            f"{str(path)!r}: column 'timestamp' must hold ISO 8601 times, got "
            f"{bad['timestamp'][0]!r} (row {bad['row'][0]})" if bad.height else str(exc),
            column="timestamp") from None


def _iso_utc(text: pl.Expr, *, strict: bool = True) -> pl.Expr:
    """ISO 8601 text to ``Datetime("us", "UTC")``: a space or ``T`` between date and time, an
    offset (``Z``, ``+02:00``, ``+0200``) or none (then the time is UTC); rows may mix them."""
    t = (text.str.strip_chars().str.replace(r"^(\d{4}-\d\d-\d\d)[ ]", "${1}T")
         .str.replace(r"[zZ]$", "+00:00").str.replace(r"([+-]\d\d)(\d\d)$", "${1}:${2}"))
    t = pl.when(t.str.contains(r"[+-]\d\d:\d\d$")).then(t).otherwise(t + "+00:00")
    return t.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", time_unit="us", time_zone="UTC",
                             strict=strict).alias("timestamp")


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _writer(engine: Any, into: str, on_error: str) -> Callable[[pl.DataFrame, str], dict[str, int]]:
    if into == "metrics":
        def metrics(frame: pl.DataFrame, key: str) -> dict[str, int]:
            # A batch id derived from the file's content: re-ingesting a file is a no-op.
            result = engine.insert_metrics_batch(frame, on_error=on_error,
                                                 batch_id=uuid.uuid5(_NAMESPACE, key))
            return {"rows_new": result.rows_written, "duplicates": result.duplicates,
                    "skipped": result.skipped.height}
        return metrics
    store = ExecutionStore(engine)
    method = {"orders": store.store_orders, "order_events": store.store_order_events,
              "fills": store.store_fills, "quotes": store.store_quotes,
              "risk_decisions": store.store_risk_decisions,
              "position_snapshots": store.store_position_snapshots}[into]

    def execution(frame: pl.DataFrame, key: str) -> dict[str, int]:
        new = method(frame)
        return {"rows_new": new, "duplicates": frame.height - new, "skipped": 0}
    return execution


def run(args: argparse.Namespace) -> int:
    if args.batch_size <= 0:
        print(f"agts ingest: --batch-size must be positive, got {args.batch_size}", file=sys.stderr)
        return 2
    files: list[tuple[Path, str]] = []
    for name in args.files:
        path = Path(name)
        try:
            fmt = _file_format(path, args.format)
        except ValueError as exc:
            print(f"agts ingest: {exc}", file=sys.stderr)
            return 2
        if not path.is_file():
            print(f"agts: error: no such file: {name!r}", file=sys.stderr)
            return 1
        files.append((path, fmt))
    reports = []
    began = time.perf_counter()
    with engine_from_args(args) as engine:
        write = _writer(engine, args.into, args.on_error)
        for path, fmt in files:
            reports.append(_ingest_file(path, fmt, args, write))
    seconds = time.perf_counter() - began
    totals = {k: sum(r[k] for r in reports) for k in ("rows_read", "rows_new", "duplicates",
                                                      "skipped")}
    totals["seconds"] = round(seconds, 3)
    totals["rows_per_sec"] = round(totals["rows_read"] / seconds, 1) if seconds > 0 else None
    if args.json:
        print_json({"into": args.into, "files": reports, "total": totals})
    else:
        for r in reports:
            print(f"{r['file']}: {r['rows_read']:,} rows read, {r['rows_new']:,} new, "
                  f"{r['duplicates']:,} already stored, {r['skipped']:,} skipped "
                  f"({r['seconds']:.2f} s)")
        rate = f", {totals['rows_per_sec']:,.0f} rows/s" if totals["rows_per_sec"] else ""
        print(f"{args.into}: {totals['rows_new']:,} new rows from {len(reports)} file(s) in "
              f"{seconds:.2f} s{rate}")
    return 0


def _ingest_file(path: Path, fmt: str, args: argparse.Namespace,
                 write: Callable[[pl.DataFrame, str], dict[str, int]]) -> dict[str, Any]:
    began = time.perf_counter()
    digest = _digest(path) if args.into == "metrics" else ""
    total = _rows(path, fmt)
    counts = {"rows_read": 0, "rows_new": 0, "duplicates": 0, "skipped": 0}
    disable = True if (args.quiet or args.json) else None
    with tqdm(total=total if total >= 0 else None, desc=path.name, unit="row", unit_scale=True,
              leave=False, disable=disable, dynamic_ncols=True) as bar:
        for index, frame in enumerate(_batches(path, fmt, args.batch_size)):
            if frame.height == 0:
                continue
            done = write(frame, f"{digest}/{args.batch_size}/{args.on_error}/{index}")
            counts["rows_read"] += frame.height
            for key, value in done.items():
                counts[key] += value
            bar.update(frame.height)
    return {"file": str(path), "format": fmt, **counts,
            "seconds": round(time.perf_counter() - began, 3)}
