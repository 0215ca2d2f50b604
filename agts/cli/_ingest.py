"""``agts ingest``: Parquet, CSV or Arrow IPC files into metrics or an execution table.

Rows are numbered as in the file: 0 is the first data row (a CSV's header is not counted). A row
that cannot be read (a CSV value that is not a number, a timestamp that is not ISO 8601) or that
the library refuses stops the file with ``agts: error: '<file>': column ... row N: ...`` (exit
1), or with ``--on-error skip`` (metrics) is left out and listed with its reason, in the text
summary and in ``--json`` (``files[].skipped_rows``).
"""

from __future__ import annotations

import argparse
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from agts.cli._common import (
    CommandError,
    UsageError,
    add_json_flag,
    engine_from_args,
    one_line,
    print_json,
    require_schema,
)
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
#: The file row number, carried through each batch next to the data (dropped before storing).
_ROW = "__agts_file_row"
#: Skipped rows listed in the text summary, per file (``--json`` lists them all).
_SHOWN_SKIPS = 20

Skipped = dict[str, Any]  # {"row": int, "reason": str}
Writer = Callable[[pl.DataFrame, str, Path], tuple[dict[str, int], list[Skipped]]]


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
                        help="stop at the first row that cannot be read or stored (raise, "
                             "default: exit 1, naming the file, row and column) or, with --into "
                             "metrics, store the valid rows and list the others with their "
                             "reason (skip); rows count from 0, the first data row")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def _file_format(path: Path, given: str | None) -> str:
    if given:
        return given
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"cannot tell the format of {str(path)!r} from its extension "
                         f"(known: {sorted(_FORMATS)!r}); pass --format")
    return fmt


def _rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    return -1  # unknown until read


def _batches(path: Path, fmt: str, size: int, *, skip: bool,
             skipped: list[Skipped]) -> Iterator[pl.DataFrame]:
    """The file's rows as frames of at most ``size`` rows, each with its file row numbers in
    column ``_ROW``. CSV rows that cannot be parsed go to ``skipped`` (``skip``) or raise.

    Raises
    ------
    CommandError
        The file cannot be read in this format.
    ValidationError
        A CSV value cannot be parsed (without ``skip``).
    """
    try:
        if fmt == "parquet":
            offset = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
                frame = _frame(pa.Table.from_batches([batch])).with_row_index(_ROW, offset=offset)
                offset += frame.height
                yield frame
            return
        if fmt == "arrow":
            with pa.memory_map(str(path)) as source:
                try:
                    table = pa.ipc.open_file(source).read_all()
                except pa.ArrowInvalid:
                    source.seek(0)
                    table = pa.ipc.open_stream(source).read_all()
            frame = _frame(table).with_row_index(_ROW)
        else:
            frame = _read_csv(path, skip=skip, skipped=skipped)
    except (OSError, pa.ArrowException, pl.exceptions.PolarsError) as exc:
        raise CommandError(f"cannot read {str(path)!r} as {fmt}: {_first_line(exc)}") from exc
    for offset in range(0, max(frame.height, 1), size):
        yield frame.slice(offset, size)


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return one_line(lines[0]) if lines else type(exc).__name__


def _read_csv(path: Path, *, skip: bool, skipped: list[Skipped]) -> pl.DataFrame:
    """A CSV file with its numbers as Float64 and its ``timestamp`` column parsed as UTC.

    Number and timestamp columns are read as text and parsed here, so that a bad value names
    its row and column (instead of failing the whole read).
    """
    head = pl.read_csv(path, n_rows=0)
    checked = [c for c in head.columns if c in _FLOATS or c == "timestamp"]
    frame = pl.read_csv(path, schema_overrides={c: pl.String for c in checked}).with_row_index(_ROW)
    if not checked:
        return frame
    parsed = {c: (_iso_utc(pl.col(c), strict=False) if c == "timestamp" else
                  pl.col(c).str.strip_chars().cast(pl.Float64, strict=False)) for c in checked}
    flags = {c: f"__bad_{i}" for i, c in enumerate(checked)}
    marked = frame.with_columns(
        *(expr.alias(c) for c, expr in parsed.items()),
        *((pl.col(c).is_not_null() & expr.is_null()).alias(flags[c]) for c, expr in parsed.items()),
    )
    bad = pl.any_horizontal(*(pl.col(f) for f in flags.values()))
    if marked.select(bad.any()).item():
        text = frame.filter(marked.select(bad).to_series())
        for row, flagged in zip(text.iter_rows(named=True),
                                marked.filter(bad).select(flags.values()).iter_rows(), strict=True):
            column = next(c for c, is_bad in zip(checked, flagged, strict=True) if is_bad)
            what = "not an ISO 8601 time" if column == "timestamp" else "not a number"
            reason = f"{what} (got {row[column]!r})"
            if not skip:
                raise ValidationError(f"{str(path)!r}: column {column!r} row {row[_ROW]}: {reason}",
                                      column=column, row=row[_ROW])
            skipped.append({"row": row[_ROW], "reason": f"{column}: {reason}"})
        marked = marked.filter(~bad)
    return marked.drop(flags.values())


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


def _writer(engine: Any, into: str, on_error: Literal["raise", "skip"]) -> Writer:
    """Store one batch (with its ``_ROW`` column): the counts and the skipped rows, with file
    row numbers."""
    if into == "metrics":
        def metrics(frame: pl.DataFrame, key: str, path: Path) -> tuple[dict[str, int], list[Skipped]]:
            rows = frame.get_column(_ROW)
            with _in_file(path, rows):
                # A batch id derived from the file's content: re-ingesting a file is a no-op.
                result = engine.insert_metrics_batch(frame.drop(_ROW), on_error=on_error,
                                                     batch_id=uuid.uuid5(_NAMESPACE, key))
            skipped = [{"row": int(rows[r]), "reason": str(e)} for r, e in zip(
                result.skipped.get_column("row"), result.skipped.get_column("error"), strict=True)
            ] if result.skipped.height else []
            return {"rows_new": result.rows_written, "duplicates": result.duplicates,
                    "skipped": len(skipped)}, skipped
        return metrics
    store = ExecutionStore(engine)
    method = {"orders": store.store_orders, "order_events": store.store_order_events,
              "fills": store.store_fills, "quotes": store.store_quotes,
              "risk_decisions": store.store_risk_decisions,
              "position_snapshots": store.store_position_snapshots}[into]

    def execution(frame: pl.DataFrame, key: str, path: Path) -> tuple[dict[str, int], list[Skipped]]:
        with _in_file(path, frame.get_column(_ROW)):
            new = method(frame.drop(_ROW))
        return {"rows_new": new, "duplicates": frame.height - new, "skipped": 0}, []
    return execution


@contextmanager
def _in_file(path: Path, rows: pl.Series) -> Iterator[None]:
    """A :class:`ValidationError` about a batch, re-raised naming the file and the file's row."""
    try:
        yield
    except ValidationError as exc:
        message, row = str(exc), exc.row
        if row is not None and 0 <= row < rows.len():
            row = int(rows[row])
            message = message.replace(f"row {exc.row}", f"row {row}", 1)
        raise ValidationError(f"{str(path)!r}: {message}", column=exc.column, row=row) from exc


def run(args: argparse.Namespace) -> int:
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if args.on_error == "skip" and args.into != "metrics":
        raise UsageError(f"--on-error skip works with --into metrics only, got --into {args.into} "
                         "(execution records are stored whole or not at all)")
    files: list[tuple[Path, str]] = []
    for name in args.files:
        path = Path(name)
        fmt = _file_format(path, args.format)
        if not path.is_file():
            raise CommandError(f"no such file: {name!r}")
        files.append((path, fmt))
    reports = []
    began = time.perf_counter()
    with engine_from_args(args) as engine:
        require_schema(engine)
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
        return 0
    for r in reports:
        print(f"{r['file']}: {r['rows_read']:,} rows read, {r['rows_new']:,} new, "
              f"{r['duplicates']:,} already stored, {r['skipped']:,} skipped "
              f"({r['seconds']:.2f} s)")
        for skipped in r["skipped_rows"][:_SHOWN_SKIPS]:
            print(f"  skipped row {skipped['row']}: {skipped['reason']}")
        if len(r["skipped_rows"]) > _SHOWN_SKIPS:
            print(f"  ... and {len(r['skipped_rows']) - _SHOWN_SKIPS:,} more skipped rows "
                  "(--json lists them all)")
    rate = f", {totals['rows_per_sec']:,.0f} rows/s" if totals["rows_per_sec"] else ""
    print(f"{args.into}: {totals['rows_new']:,} new rows from {len(reports)} file(s) in "
          f"{seconds:.2f} s{rate}")
    return 0


def _ingest_file(path: Path, fmt: str, args: argparse.Namespace, write: Writer) -> dict[str, Any]:
    began = time.perf_counter()
    try:
        digest = _digest(path) if args.into == "metrics" else ""
        total = _rows(path, fmt)
    except (OSError, pa.ArrowException) as exc:
        raise CommandError(f"cannot read {str(path)!r} as {fmt}: {_first_line(exc)}") from exc
    counts = {"rows_read": 0, "rows_new": 0, "duplicates": 0, "skipped": 0}
    unreadable: list[Skipped] = []
    skipped: list[Skipped] = []
    disable = True if (args.quiet or args.json) else None
    with tqdm(total=total if total >= 0 else None, desc=path.name, unit="row", unit_scale=True,
              leave=False, disable=disable, dynamic_ncols=True) as bar:
        batches = _batches(path, fmt, args.batch_size, skip=args.on_error == "skip",
                           skipped=unreadable)
        for index, frame in enumerate(batches):
            if frame.height == 0:
                continue
            done, refused = write(frame, f"{digest}/{args.batch_size}/{args.on_error}/{index}",
                                  path)
            counts["rows_read"] += frame.height
            for key, value in done.items():
                counts[key] += value
            skipped += refused
            bar.update(frame.height)
    counts["rows_read"] += len(unreadable)
    counts["skipped"] += len(unreadable)
    return {"file": str(path), "format": fmt, **counts,
            "skipped_rows": sorted(unreadable + skipped, key=lambda s: s["row"]),
            "seconds": round(time.perf_counter() - began, 3)}
