"""Turn what users hand in (dataclasses, Polars, Arrow, pandas) into checked Arrow tables.

Every batch becomes a Polars frame with exactly the table's columns, cast to the staging types
(Arrow's ``uuid`` extension type, which ADBC ingests as PostgreSQL uuid; ``timestamp[us, UTC]``,
float64, text; jsonb as JSON text), then every rule of
:mod:`agts.execution._schema` is checked, vectorized, before anything is sent.

Timestamps follow the shared rule of :func:`agts._arrow.utc_series`: naive values are taken to be
UTC (never shifted by the local time zone), aware values are converted to UTC, precision is
microseconds (PostgreSQL's; finer digits are truncated), values outside the range a hypertable
can hold (4714-11-24 BC to 294247-01-01 AD) are refused.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa

from agts._arrow import utc_series
from agts.errors import ConstraintError, ValidationError
from agts.execution._schema import Column, TableSpec

__all__ = ["to_arrow", "to_polars", "utc"]

_UUID = r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"
_ARROW: dict[str, pa.DataType] = {
    "uuid": pa.uuid(), "timestamptz": pa.timestamp("us", "UTC"), "text": pa.string(),
    "float8": pa.float64(), "jsonb": pa.string(),
}


def utc(value: datetime, *, name: str) -> datetime:
    """``value`` as an aware UTC datetime; a naive one is taken to be UTC."""
    if not isinstance(value, datetime):
        raise ValidationError(f"{name} must be a datetime, got {value!r}", column=name)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValidationError(f"{name} {value!r} is outside the range of UTC datetimes",
                              column=name) from None


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, datetime):  # records may mix naive, UTC and other offsets
        return utc(value, name="timestamp")
    return value


def to_polars(data: Any, *, noun: str) -> pl.DataFrame:
    """A Polars frame from a frame, an Arrow table, pandas, or a sequence of records."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pa.Table | pa.RecordBatch):
        frame = pl.from_arrow(data)
        assert isinstance(frame, pl.DataFrame)
        return frame
    if type(data).__module__.startswith("pandas"):
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
    wanted = {"uuid": "UUID text or 16-byte binary", "timestamptz": "a datetime",
              "float8": "a number", "text": "a string", "jsonb": "JSON text or a struct"}
    raise ValidationError(
        f"column {name!r} must hold {wanted[col.type]}, got dtype {dtype}", column=name
    )


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
    frame = frame.select(_cast(frame, c) for c in spec.columns)
    frame = frame.with_columns(
        utc_series(frame[c.name], column=c.name) for c in spec.columns if c.type == "timestamptz")
    if spec.kind == "market_quotes":
        frame = frame.with_columns(mid=pl.coalesce("mid", (pl.col("bid") + pl.col("ask")) / 2))
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
