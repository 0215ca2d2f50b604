"""Shared Arrow / Polars normalization: input frames to Arrow, timestamps to UTC microseconds.

The timestamp rules every write path of agts follows:

- **timezone-aware** values are converted to UTC (the instant is kept);
- **naive** values are taken to *be* UTC (``naive="utc"``, the default) — never shifted by the
  machine's local zone — or refused (``naive="raise"``);
- **sub-microsecond** precision (nanoseconds) is truncated towards the past to whole microseconds,
  PostgreSQL's precision (``…00:00:00.000001999`` becomes ``…00:00:00.000001``);
- values outside 0002-01-01 to 9998-12-31 (UTC) are refused. PostgreSQL stores 4714 BC to
  294276 AD and a TimescaleDB hypertable 4714-11-24 BC to 294247-01-01, but agts reads times back
  as Python ``datetime`` (years 1 to 9999): a stored point near or past those years, or the edge
  of its chunk or rollup bucket, broke rollup refreshes, archive runs, retention and the storage
  report ("timestamp too small (before year 1)"). A year on each side leaves room for chunks
  and buckets of up to a year.

Results are ``Datetime("us", "UTC")`` (Polars) or ``timestamp[us, tz=UTC]`` (Arrow).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal, get_args

import polars as pl
import pyarrow as pa

from agts.errors import ValidationError

__all__ = [
    "END_MICROS",
    "MIN_MICROS",
    "NaivePolicy",
    "first_true",
    "out_of_range",
    "shown_value",
    "to_arrow_table",
    "unique_columns",
    "utc_array",
    "utc_series",
]

NaivePolicy = Literal["utc", "raise"]

#: 0002-01-01 00:00:00 UTC in microseconds since the Unix epoch: the earliest instant agts takes.
MIN_MICROS = -62_104_060_800_000_000
#: 9999-01-01 00:00:00 UTC: the first instant agts refuses.
END_MICROS = 253_370_764_800_000_000
#: How the range is named in messages.
RANGE_TEXT = "0002-01-01 to 9998-12-31 UTC"

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_PY_MIN_SECONDS = -62_135_596_800   # 0001-01-01, Python's datetime.min, in Unix seconds
_PY_END_SECONDS = 253_402_300_800   # 10000-01-01


def unique_columns(names: Any, *, what: str) -> None:
    """Refuse a frame or table with a column name twice (Polars and pyarrow would raise their own
    errors later, or keep one of them silently)."""
    counts = Counter(str(n) for n in names)
    twice = sorted(n for n, c in counts.items() if c > 1)
    if twice:
        raise ValidationError(f"{what} has the column(s) {twice!r} more than once; each column "
                              "may appear once", column=twice[0])


def to_arrow_table(data: Any, *, what: str = "data") -> pa.Table:
    """An Arrow table from a Polars or pandas DataFrame, a pyarrow Table, RecordBatch or
    RecordBatchReader, or any object exporting the Arrow C stream interface.

    Raises
    ------
    ValidationError
        ``data`` is none of those.
    """
    if isinstance(data, pl.DataFrame):
        return data.to_arrow()
    if isinstance(data, pl.LazyFrame):
        return data.collect().to_arrow()
    if isinstance(data, pa.Table | pa.RecordBatch | pa.RecordBatchReader):
        unique_columns(data.schema.names, what=what)
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.read_all()
    if type(data).__module__.split(".")[0] == "pandas" and type(data).__name__ == "DataFrame":
        unique_columns(data.columns, what=what)
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__"):
        table = pa.table(data)
        unique_columns(table.schema.names, what=what)
        return table
    raise ValidationError(
        f"{what} must be a polars or pandas DataFrame, a pyarrow Table, RecordBatch or "
        f"RecordBatchReader, got {type(data).__name__}"
    )


def shown_value(values: pl.Series, row: int) -> str:
    """``repr`` of one value for an error message, even one Python's datetime cannot hold."""
    one = values.slice(row, 1)
    dtype = one.dtype
    if isinstance(dtype, pl.Datetime):
        # Past year 9999 neither Python nor Polars' text cast can show it (Polars panics).
        raw = one.dt.replace_time_zone(None) if dtype.time_zone else one
        number = raw.cast(pl.Int64).to_list()[0]
        factor = _PER_SECOND[dtype.time_unit]
        if number is not None and not _PY_MIN_SECONDS <= number // factor < _PY_END_SECONDS:
            return f"{number} {dtype.time_unit} since 1970-01-01 UTC"
    try:
        return repr(one.to_list()[0])
    except (ValueError, OverflowError):
        return f"{one.cast(pl.String).to_list()[0]!r}"


def first_true(mask: pl.Series) -> int | None:
    """Index of the first true value of a boolean series (nulls count as false), or None."""
    mask = mask.fill_null(False)
    if not mask.any():
        return None
    return int(mask.arg_max())  # type: ignore[arg-type]


def utc_series(
    values: pl.Series, *, column: str, naive: NaivePolicy = "utc"
) -> pl.Series:
    """``values`` as ``Datetime("us", "UTC")`` under the module's rules.

    Parameters
    ----------
    values
        A Polars ``Datetime`` series (any unit, naive or with any time zone). Nulls pass through.
    column
        The column's name, for error messages.
    naive
        ``"utc"``: naive values are UTC. ``"raise"``: naive values are refused.

    Raises
    ------
    ValidationError
        Not a datetime column, a naive column under ``naive="raise"``, or a value outside the
        range above; names the column and the first offending row.
    """
    if naive not in get_args(NaivePolicy):
        raise ValueError(f"naive must be one of {get_args(NaivePolicy)!r}, got {naive!r}")
    dtype = values.dtype
    if not isinstance(dtype, pl.Datetime):
        raise ValidationError(
            f"column {column!r} must hold timezone-aware timestamps, got dtype {dtype}",
            column=column,
        )
    if dtype.time_zone is None and naive == "raise":
        raise ValidationError(
            f"column {column!r} holds naive timestamps; give them a time zone "
            "(agts stores UTC instants)",
            column=column, row=0 if len(values) else None,
        )
    bad = first_true(out_of_range(values))
    if bad is not None:
        raise ValidationError(
            f"column {column!r} row {bad}: timestamp {shown_value(values, bad)} is outside the "
            f"range agts stores ({RANGE_TEXT})",
            column=column, row=bad,
        )
    if dtype.time_zone is not None:
        out = values.dt.convert_time_zone("UTC")
    else:
        out = values.dt.replace_time_zone("UTC")
    # cast_time_unit truncates towards the past (floor), also before 1970.
    return out.dt.cast_time_unit("us")


def out_of_range(values: pl.Series) -> pl.Series:
    """Boolean mask of the values of a ``Datetime`` series outside ``[MIN_MICROS, END_MICROS)``.
    Nulls give false. Read from the physical values (UTC for a zoned series), never through a
    time-zone conversion, which Polars cannot do for far years."""
    dtype = values.dtype
    assert isinstance(dtype, pl.Datetime)
    if dtype.time_unit == "ns":  # every int64 nanosecond value (1677..2262) is in range
        return pl.Series(values.name, [False] * len(values), dtype=pl.Boolean)
    ints = values.to_physical()  # naive: taken as UTC; zoned: the UTC instant
    factor = 1_000_000 // _PER_SECOND[dtype.time_unit]  # both bounds are whole days: exact
    return ((ints < MIN_MICROS // factor) | (ints >= END_MICROS // factor)).fill_null(False)


def utc_array(
    values: pa.Array | pa.ChunkedArray, *, column: str, naive: NaivePolicy = "utc"
) -> pa.ChunkedArray:
    """Arrow form of :func:`utc_series`: ``timestamp[us, tz=UTC]``."""
    if not pa.types.is_timestamp(values.type):
        raise ValidationError(
            f"column {column!r} must hold timezone-aware timestamps, got type {values.type}",
            column=column,
        )
    series = pl.Series(column, values)
    result = utc_series(series, column=column, naive=naive).to_arrow()
    return result if isinstance(result, pa.ChunkedArray) else pa.chunked_array([result])
