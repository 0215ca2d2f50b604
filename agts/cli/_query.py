"""``agts query``: one metric's points or time-bucketed aggregates, to the terminal or a file.

Every argument is checked before connecting (a mistake exits 2). Files are written as CSV, JSON
or Parquet only (``--output``'s extension or ``--format``), through a temporary file renamed into
place when complete, so a failed query never leaves a truncated file behind. CSV and JSON write
timestamps the same way: ISO 8601 with offset and microseconds (``2026-03-02T00:00:00.000000+00:00``).
A query that matches nothing exits 0 with a warning saying why (no such metric, label or value).
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import polars as pl

from agts.cli._common import (
    CommandError,
    UsageError,
    add_json_flag,
    engine_from_args,
    iso,
    positive_int,
    require_schema,
    usage_errors,
    warn,
)
from agts.errors import ResultTooLargeError

__all__ = ["register", "run"]

_FORMATS = ("table", "csv", "parquet", "json")
#: What ``--output`` may be: the file formats by extension (the table is for the terminal only).
_FILE_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
_FILE_LIST = ".csv (csv), .json (json), .parquet or .pq (parquet)"
#: chrono's spelling of ``datetime.isoformat(timespec="microseconds")``.
_TIMESTAMP = "%Y-%m-%dT%H:%M:%S%.6f%:z"
_SLICE_ROWS = 5_000


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "query", help="a metric's points or aggregates as a table, CSV, Parquet or JSON",
        description=(
            "Read one metric in [--start, --end) (ISO 8601; naive times are UTC; default: the "
            "last hour). Without --bucket: the raw points (labels as a struct, or JSON text in "
            "CSV). With --bucket: one row per bucket (and --group-by label values) with one "
            "column per --agg. To the terminal, results are capped at query.max_results rows; "
            "--output streams any number of rows to a file: CSV, JSON (an array, one row per "
            "line) or Parquet, from the extension (" + _FILE_LIST + ") or --format. CSV and JSON "
            "timestamps are ISO 8601 with offset and microseconds. A query that matches nothing "
            "exits 0 and says why on stderr."
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
    parser.add_argument("--agg", metavar="LIST",
                        help="aggregations with --bucket, comma-separated: avg, min, max, sum, "
                             "count, first, last, stddev, median, p50, p99, p99.9 (default avg)")
    parser.add_argument("--group-by", metavar="KEYS", help="label keys, comma-separated (--bucket)")
    parser.add_argument("--fill", choices=["null", "forward"], help="add empty buckets (--bucket)")
    parser.add_argument("--format", choices=_FORMATS,
                        help="output format (default: from --output's extension, else table); "
                             "table is for the terminal only")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of stdout: " + _FILE_LIST)
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="at most N raw points (not with --bucket)")
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
    """The output format from ``--json`` / ``--format`` / ``--output``; refuses what agts cannot
    write (a table to a file, an unknown extension, an extension that names another format)."""
    if args.json and args.format not in (None, "json"):
        raise UsageError(f"--json and --format {args.format} disagree: give one of them")
    fmt: str | None = "json" if args.json else args.format
    if args.output is None:
        if fmt == "parquet":
            raise UsageError("--format parquet needs --output FILE")
        return fmt or "table"
    named = _FILE_FORMATS.get(Path(args.output).suffix.lower())
    if fmt == "table":
        raise UsageError(f"--format table is for the terminal; --output writes {_FILE_LIST}")
    if fmt is None:
        if named is None:
            raise UsageError(f"cannot tell the format of --output {args.output!r} from its "
                             f"extension; agts writes {_FILE_LIST} (or pass --format csv, json "
                             "or parquet)")
        return named
    if named is not None and named != fmt:
        raise UsageError(f"--output {args.output!r} names a {named} file, but the format is {fmt}")
    return fmt


def _range(args: argparse.Namespace) -> tuple[datetime, datetime]:
    end: datetime = args.end or datetime.now(UTC)
    start: datetime = args.start or end - timedelta(hours=1)
    if end < start:
        shown = f"{iso(end)!r}" + ("" if args.end else " (default: now)")
        raise UsageError(f"--start must not be after --end, got --start {iso(start)!r} and "
                         f"--end {shown}")
    return start, end


def _aggregations(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The ``--agg`` names and ``--group-by`` keys; refuses bucket options without ``--bucket``."""
    if args.bucket is None:
        given = [flag for flag, value in (("--agg", args.agg), ("--group-by", args.group_by),
                                          ("--fill", args.fill)) if value is not None]
        if given:
            verb = "needs" if len(given) == 1 else "need"
            raise UsageError(f"{' and '.join(given)} {verb} --bucket (without it, the raw points "
                             "are returned)")
        return [], []
    if args.limit is not None:
        raise UsageError("--limit applies to raw points, not to --bucket aggregates")
    aggs = [a.strip() for a in (args.agg or "avg").split(",") if a.strip()]
    group_by = [g.strip() for g in (args.group_by or "").split(",") if g.strip()]
    from agts.query._args import parse_aggregations, parse_bucket

    with usage_errors("--bucket"):
        parse_bucket(args.bucket)
    with usage_errors("--agg"):
        parse_aggregations(aggs)
    return aggs, group_by


def _filters(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def _check_output(output: str | None) -> None:
    if output is None:
        return
    path = Path(output)
    if path.is_dir():
        raise CommandError(f"cannot write --output {output!r}: it is a directory")
    if not path.parent.is_dir():
        raise CommandError(f"cannot write --output {output!r}: directory {str(path.parent)!r} "
                           "does not exist")


def run(args: argparse.Namespace) -> int:
    fmt = _format(args)
    start, end = _range(args)
    aggs, group_by = _aggregations(args)
    _check_output(args.output)
    with engine_from_args(args) as engine:
        require_schema(engine)
        try:
            with usage_errors():  # what the library refuses here is an argument
                rows = _query(engine, args, start, end, fmt, aggs, group_by)
        except ResultTooLargeError as exc:
            raise ResultTooLargeError(f"{exc}; from the command line: --output FILE streams every "
                                      "row, --limit N shows the first N") from exc
        if rows == 0 or group_by:
            for note in _explain(engine, args.metric, _filters(args.labels), group_by,
                                 empty=rows == 0, start=start, end=end):
                warn(note)
    if args.output:
        print(f"{rows:,} rows written to {args.output}", file=sys.stderr)
    return 0


def _query(engine: Any, args: argparse.Namespace, start: datetime, end: datetime, fmt: str,
           aggs: list[str], group_by: list[str]) -> int:
    grouped = _filters(args.labels)
    labels = {k: v[0] for k, v in grouped.items() if len(v) == 1} or None
    labels_in = {k: v for k, v in grouped.items() if len(v) > 1} or None
    frames: Iterable[pl.DataFrame]
    if args.bucket is not None:
        frames = [engine.query_aggregated(args.metric, start, end, args.bucket, aggs, labels,
                                          labels_in=labels_in, group_by=group_by or None,
                                          fill=args.fill)]
    elif args.output and args.limit is None:
        frames = engine.query_metrics(args.metric, start, end, labels, labels_in=labels_in,
                                      iter_batches=True)
    else:
        frames = [engine.query_metrics(args.metric, start, end, labels, labels_in=labels_in,
                                       limit=args.limit)]
    if args.output is None:
        return _write(frames, fmt, None)
    with _replacing(args.output) as part:
        return _write(frames, fmt, part)


@contextmanager
def _replacing(output: str) -> Iterator[str]:
    """A temporary file next to ``output``, renamed over it when the block succeeds and removed
    when it fails; OS errors become one-line :class:`CommandError` messages."""
    path = Path(output)
    try:
        handle, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(handle)
    except OSError as exc:
        raise CommandError(f"cannot write --output {output!r}: {exc.strerror or exc}") from exc
    try:
        yield part
        os.chmod(part, 0o666 & ~_umask())
        os.replace(part, path)
    except OSError as exc:
        raise CommandError(f"cannot write --output {output!r}: {exc.strerror or exc}") from exc
    finally:
        Path(part).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _for_text(frame: pl.DataFrame, fmt: str) -> pl.DataFrame:
    """Timestamps as ISO 8601 text (CSV and JSON alike); labels as JSON text except in JSON."""
    columns = [pl.col(name).dt.to_string(_TIMESTAMP) for name, dtype in frame.schema.items()
               if isinstance(dtype, pl.Datetime)]
    if fmt != "json" and isinstance(frame.schema.get("labels"), pl.Struct):
        columns.append(pl.col("labels").struct.json_encode())
    return frame.with_columns(columns) if columns else frame


def _write(frames: Iterable[pl.DataFrame], fmt: str, path: str | None) -> int:
    """Write the frames in ``fmt`` to ``path`` (or stdout); return the row count."""
    if fmt == "parquet":
        assert path is not None
        return _write_parquet(frames, path)
    rows = 0
    if fmt == "csv":
        with _open(path) as out:
            for i, part in enumerate(_slices(frames)):
                out.write(_for_text(part, fmt).write_csv(include_header=i == 0))
                rows += part.height
        return rows
    if fmt == "json":  # an array with one row per line: streams, and reads well in a terminal
        with _open(path) as out:
            out.write("[")
            for part in _slices(frames):
                if part.height:
                    lines = _for_text(part, fmt).write_ndjson().rstrip("\n").replace("\n", ",\n")
                    out.write(("\n" if rows == 0 else ",\n") + lines)
                    rows += part.height
            out.write("\n]\n" if rows else "]\n")
        return rows
    collected = pl.concat(list(frames), how="diagonal_relaxed")
    shown = collected.with_columns(pl.col("labels").struct.json_encode()) if isinstance(
        collected.schema.get("labels"), pl.Struct) else collected
    with pl.Config(tbl_rows=50, tbl_cols=-1, tbl_width_chars=160, fmt_str_lengths=80):
        sys.stdout.write(f"{shown}\n{collected.height:,} rows\n")
    return collected.height


def _slices(frames: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The frames in slices of at most ``_SLICE_ROWS`` rows: text is formatted and written a
    slice at a time (bounded memory; a reader that goes away is noticed at the next write)."""
    for frame in frames:
        if frame.height <= _SLICE_ROWS:
            yield frame
        else:
            yield from frame.iter_slices(_SLICE_ROWS)


def _write_parquet(frames: Iterable[pl.DataFrame], path: str) -> int:
    import pyarrow.parquet as pq

    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for frame in frames:
            table = frame.to_arrow()
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(path, schema, compression="zstd")
            writer.write_table(table.cast(schema))
            rows += frame.height
        if writer is None:  # no rows at all: still write a (schema-less) empty file
            pl.DataFrame().write_parquet(path)
    finally:
        if writer is not None:
            writer.close()
    return rows


@contextmanager
def _open(path: str | None) -> Iterator[TextIO]:
    """A text file for ``path``, or stdout (left open) when ``path`` is None."""
    if path is None:
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        yield handle


def _explain(engine: Any, metric: str, filters: dict[str, list[str]], group_by: Sequence[str],
             *, empty: bool, start: datetime, end: datetime) -> list[str]:
    """Why a query matched nothing (no such metric, label key or value), and which ``--group-by``
    keys no series of the metric has: warnings for stderr."""
    with engine.db.connection() as conn:
        count = conn.execute("SELECT count(*) FROM agts.series WHERE metric_name = %s",
                             [metric]).fetchone()
        if not count or not count[0]:
            names = [r[0] for r in conn.execute(
                "SELECT DISTINCT metric_name FROM agts.series ORDER BY 1 LIMIT 10000")]
            close = difflib.get_close_matches(metric, names, n=3)
            hint = (f"; did you mean {_listing(close)}?" if close else
                    f" (stored: {_listing(names)})" if names else " (no metric is stored yet)")
            return [f"no metric {metric!r} is stored{hint}"]
        keys = [r[0] for r in conn.execute(
            "SELECT DISTINCT jsonb_object_keys(labels) FROM agts.series WHERE metric_name = %s "
            "ORDER BY 1", [metric])]
        known = f"its label keys: {_listing(keys)}" if keys else "its series have no labels"
        notes: list[str] = []
        for key, values in filters.items():
            if key not in keys:
                notes.append(f"no series of {metric!r} has the label {key!r} ({known})")
                continue
            stored = [r[0] for r in conn.execute(
                "SELECT DISTINCT labels->>%s::text FROM agts.series WHERE metric_name = %s "
                "AND labels ? %s::text ORDER BY 1", [key, metric, key])]
            if not set(values) & set(stored):
                close = difflib.get_close_matches(values[0], stored, n=3)
                hint = f"did you mean {_listing(close)}?" if close else f"stored: {_listing(stored)}"
                wanted = " or ".join(f"{key}={v!r}" for v in values)
                notes.append(f"no series of {metric!r} has the label {wanted} ({hint})")
        if empty and filters and not notes:
            where = " AND ".join("labels->>%s::text = ANY(%s::text[])" for _ in filters)
            params: list[Any] = [metric]
            for key, values in filters.items():
                params += [key, values]
            together = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM agts.series WHERE metric_name = %s AND {where})",
                params).fetchone()
            if not together or not together[0]:
                shown = ", ".join(f"{k}={'|'.join(v)}" for k, v in filters.items())
                notes.append(f"no series of {metric!r} has all of the labels {shown} together")
        if empty and not notes:
            which = " with these labels" if filters else ""
            notes.append(f"no points of {metric!r}{which} in [{iso(start)}, {iso(end)})")
        for key in group_by:
            if key not in keys:
                notes.append(f"--group-by {key!r}: no series of {metric!r} has this label "
                             f"({known}); its column is null")
    return notes


def _listing(values: Sequence[str], *, limit: int = 10) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")
