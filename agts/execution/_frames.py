"""Turn what users hand in (dataclasses, Polars, Arrow, pandas) into checked Arrow tables.

Every batch becomes a Polars frame with exactly the table's columns, cast to the staging types
(Arrow's ``uuid`` extension type, which ADBC ingests as PostgreSQL uuid; ``timestamp[us, UTC]``,
float64, text; jsonb as JSON text), then every rule of
:mod:`agts.execution._schema` is checked, vectorized, before anything is sent.

Timestamps follow the shared rule of :func:`agts._arrow.utc_series`: naive values are taken to be
UTC (never shifted by the local time zone), aware values are converted to UTC, precision is
microseconds (PostgreSQL's; finer digits are truncated), values outside 0002-01-01 to 9998-12-31
UTC are refused.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa

from agts._args import to_utc
from agts._arrow import unique_columns, utc_series
from agts.errors import ConstraintError, ValidationError
from agts.execution._schema import Column, TableSpec

__all__ = ["to_arrow", "to_polars"]

_UUID = r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
_ARROW: dict[str, pa.DataType] = {
    "uuid": pa.uuid(), "timestamptz": pa.timestamp("us", "UTC"), "text": pa.string(),
    "float8": pa.float64(), "jsonb": pa.string(),
}


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        try:
            return json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:  # an object, NaN or an infinity: not JSON
            raise ValidationError(f"details must be JSON (objects, lists, strings, finite numbers, "
                                  f"booleans, null), got {value!r}: {exc}",
                                  column="details") from None
    if isinstance(value, date) or type(value).__name__ == "datetime64":
        # records may mix naive, UTC and other offsets (and dates, numpy datetimes)
        return to_utc(value, name="timestamp")
    return value


def to_polars(data: Any, *, noun: str) -> pl.DataFrame:
    """A Polars frame from a frame, an Arrow table, pandas, or a sequence of records."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pa.Table | pa.RecordBatch):
        unique_columns(data.schema.names, what=f"{noun} data")
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        return frame
    if type(data).__module__.startswith("pandas"):
        unique_columns(data.columns, what=f"{noun} data")
        return pl.from_pandas(data)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        if not all(dataclasses.is_dataclass(r) and not isinstance(r, type) for r in data):
            raise ValidationError(
                f"{noun} records must be dataclass instances, got "
                f"{sorted({type(r).__name__ for r in data})!r}"
            )
        if not data:
            return pl.DataFrame()
        names = [f.name for f in dataclasses.fields(data[0])]
        columns = {n: [_plain(getattr(r, n)) for r in data] for n in names}
        return pl.DataFrame(columns, strict=False)
    raise ValidationError(
        f"{noun} data must be a polars or pandas DataFrame, a pyarrow Table or a list of "
        f"records, got {type(data).__name__}"
    )


def _cast(frame: pl.DataFrame, col: Column) -> pl.Expr:
    name, dtype = col.name, frame.schema[col.name]
    expr = pl.col(name)
    if dtype == pl.Null:
        return expr.cast(pl.String if col.type != "float8" else pl.Float64).alias(name)
    if col.type == "uuid":
        if dtype == pl.Binary:
            return expr.bin.encode("hex").alias(name)
        if dtype == pl.String:
            return expr.str.to_lowercase().alias(name)
    elif col.type == "timestamptz":
        if isinstance(dtype, pl.Datetime):
            return expr  # made UTC by agts._arrow.utc_series in to_arrow
    elif col.type == "float8":
        if dtype.is_numeric():
            return expr.cast(pl.Float64).alias(name)
    elif col.type == "jsonb":
        if isinstance(dtype, pl.Struct):
            return expr.struct.json_encode().alias(name)
        if dtype == pl.String:
            return expr
    elif col.type == "text" and (
            dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)):
        return expr.cast(pl.String).alias(name)
    wanted = {"uuid": "UUID text or 16-byte binary",
              "timestamptz": "datetimes, dates or ISO 8601 text",
              "float8": "a number", "text": "a string", "jsonb": "JSON text or a struct"}
    raise ValidationError(
        f"column {name!r} must hold {wanted[col.type]}, got dtype {dtype}", column=name
    )


def _times(values: pl.Series, *, column: str) -> pl.Series:
    """Timestamps given as text (ISO 8601), dates or objects, by the rules of
    :func:`agts._args.to_utc` (the same as every other time argument)."""
    if values.dtype == pl.Date:
        return values.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if values.dtype not in (pl.String, pl.Object):
        return values  # refused with the column's dtype by _cast
    out = [None if v is None else to_utc(v, name=column) for v in values.to_list()]
    return pl.Series(column, out, dtype=pl.Datetime("us", "UTC"))


def _check_text(frame: pl.DataFrame, col: Column, spec: TableSpec) -> None:
    """PostgreSQL text cannot hold NUL, nor jsonb NaN/Infinity or the escape \\u0000: refused
    here, naming the row, instead of failing the whole batch in the server."""
    if col.type == "text":
        hit = _first(frame, pl.col(col.name).str.contains("\x00", literal=True), col.name)
        if hit:
            raise ValidationError(
                f"{spec.noun} column {col.name!r} row {hit[0]}: contains a NUL character "
                f"(PostgreSQL text cannot), got {hit[1]!r}", column=col.name, row=hit[0])
    elif col.type == "jsonb":
        texts = frame.get_column(col.name)
        for row, text in enumerate(texts.to_list()):
            if text is None:
                continue
            try:
                json.loads(text, parse_constant=_no_constant)
            except ValueError as exc:
                raise ValidationError(
                    f"{spec.noun} column {col.name!r} row {row}: not JSON that PostgreSQL's jsonb "
                    f"takes ({exc}), got {text[:200]!r}", column=col.name, row=row) from None
            if "\\u0000" in text:
                raise ValidationError(
                    f"{spec.noun} column {col.name!r} row {row}: holds the escape \\u0000, which "
                    "jsonb cannot store", column=col.name, row=row)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _first(frame: pl.DataFrame, mask: pl.Expr, column: str) -> tuple[int, Any] | None:
    hit = frame.with_row_index("__row").filter(mask).head(1)
    if hit.height == 0:
        return None
    return int(hit["__row"][0]), hit[column][0]


def to_arrow(data: Any, spec: TableSpec) -> pa.Table:
    """Check ``data`` against ``spec`` and return it as an Arrow table of the staging types.

    Raises
    ------
    ValidationError
        A column is missing, unknown or of a type that cannot be converted; an id is not a UUID.
    ConstraintError
        A value breaks a rule (the message names the constraint, column, value and row).
    """
    frame = to_polars(data, noun=spec.noun)
    if spec.kind == "market_quotes" and "mid" not in frame.columns and {"bid", "ask"} <= set(
            frame.columns):
        frame = frame.with_columns(mid=pl.lit(None, pl.Float64))
    unknown = [c for c in frame.columns if c not in spec.names]
    if unknown:
        raise ValidationError(
            f"unknown {spec.noun} column(s) {unknown!r}; the columns are {list(spec.names)!r}",
            column=unknown[0],
        )
    missing = [c.name for c in spec.columns if c.name not in frame.columns and not c.nullable]
    if missing:
        raise ValidationError(
            f"{spec.noun} data lacks column(s) {missing!r}; the columns are {list(spec.names)!r}",
            column=missing[0],
        )
    frame = frame.with_columns(
        pl.lit(None).alias(c.name) for c in spec.columns if c.name not in frame.columns
    )
    frame = frame.with_columns(
        _times(frame[c.name], column=c.name) for c in spec.columns
        if c.type == "timestamptz" and not isinstance(frame.schema[c.name], pl.Datetime | pl.Null))
    frame = frame.select(_cast(frame, c) for c in spec.columns)
    frame = frame.with_columns(
        utc_series(frame[c.name], column=c.name) for c in spec.columns if c.type == "timestamptz")
    if spec.kind == "market_quotes":
        frame = frame.with_columns(mid=pl.coalesce("mid", (pl.col("bid") + pl.col("ask")) / 2))
    for col in spec.columns:
        _check_text(frame, col, spec)
    for col in spec.columns:
        if col.type == "uuid":
            hit = _first(frame, ~pl.col(col.name).str.contains(_UUID), col.name)
            if hit:
                raise ValidationError(
                    f"{col.name} must be a UUID, got {hit[1]!r} (row {hit[0]})",
                    column=col.name, row=hit[0],
                )
        if not col.nullable:
            hit = _first(frame, pl.col(col.name).is_null(), col.name)
            if hit:
                raise ConstraintError(
                    f"constraint 'not_null' violated: {spec.noun} column {col.name!r} must not "
                    f"be null, got None (row {hit[0]})", constraint="not_null",
                )
    for rule in spec.rules:
        hit = _first(frame, rule.violated(), rule.column)
        if hit:
            raise ConstraintError(
                f"constraint {rule.constraint!r} violated: {spec.noun} column {rule.column!r} "
                f"{rule.requirement}, got {hit[1]!r} (row {hit[0]})",
                constraint=rule.constraint,
            )
    # uuid text -> 16 bytes -> Arrow's uuid extension type, which ADBC sends as PostgreSQL uuid
    frame = frame.with_columns(
        pl.col(c.name).str.replace_all("-", "", literal=True).str.decode("hex")
        for c in spec.columns if c.type == "uuid")
    table = frame.to_arrow()
    arrays = [
        table.column(c.name).cast(pa.binary()).cast(pa.binary(16)).cast(pa.uuid())
        if c.type == "uuid" else table.column(c.name).cast(_ARROW[c.type])
        for c in spec.columns
    ]
    schema = pa.schema([pa.field(c.name, _ARROW[c.type], nullable=c.nullable)
                        for c in spec.columns])
    return pa.Table.from_arrays(arrays, schema=schema)
