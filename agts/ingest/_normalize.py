"""Validation at the door: any accepted input form to one normalized Polars frame.

The normalized frame has exactly these columns, the form batches travel in through the buffer, the
spool and the writer:

- ``time``: ``Datetime("us", "UTC")`` (see :mod:`agts._arrow` for the timestamp rules);
- ``key``: which series (a row of the batch's series table: ``metric_name``, non-empty, and
  ``labels``, the label set's canonical JSON text: keys sorted, no spaces, null values dropped);
- ``value``: ``Float64``, finite.

Everything runs as column operations except the series, which are checked and canonicalized once
per *distinct* (metric_name, labels) (a few thousand in a batch of millions of points).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import polars as pl

from agts._arrow import (
    RANGE_TEXT,
    first_true,
    out_of_range,
    shown_value,
    to_arrow_table,
    utc_series,
)
from agts.errors import ValidationError
from agts.ingest._types import (
    MAX_LABELS,
    MAX_LABELS_BYTES,
    MAX_NAME_LENGTH,
    MetricPoint,
    OnError,
)

__all__ = ["COLUMNS", "Normalized", "canonical_labels", "normalize"]

COLUMNS = ("timestamp", "metric_name", "value", "labels")


@dataclass(frozen=True)
class Normalized:
    """A validated batch, dictionary-encoded by series, and the rows refused on the way.

    ``points`` has ``time``, ``key`` (a row index into ``series``) and ``value``; ``series`` has
    ``metric_name`` and the canonical ``labels`` text (null for the refused keys no point uses).
    Several keys may name the same series. ``skipped`` holds the refused input rows with their
    ``row`` index and the ``error`` (``on_error="skip"``).
    """

    points: pl.DataFrame
    series: pl.DataFrame
    skipped: pl.DataFrame = field(default_factory=lambda: pl.DataFrame())

    @property
    def height(self) -> int:
        return self.points.height

    def slice(self, offset: int, length: int | None = None) -> Normalized:
        """The points ``offset:offset+length`` (the series table is shared)."""
        return Normalized(self.points.slice(offset, length), self.series)

    @staticmethod
    def concat(parts: Sequence[Normalized]) -> Normalized:
        """One batch of several, keys renumbered."""
        if len(parts) == 1:
            return Normalized(parts[0].points, parts[0].series)
        points = []
        offset = 0
        for part in parts:
            points.append(part.points.with_columns(pl.col("key") + offset))
            offset += part.series.height
        return Normalized(pl.concat(points), pl.concat([p.series for p in parts]))

    def decoded(self) -> pl.DataFrame:
        """The points with ``metric_name`` and ``labels`` instead of ``key``."""
        return self.points.join(
            self.series.with_row_index("key"), on="key", how="left", maintain_order="left"
        ).select("time", "metric_name", "labels", "value")


class _LabelError(ValueError):
    pass


def canonical_labels(labels: Any) -> str:
    """The canonical JSON text of one label set; raises ``_LabelError`` with the reason.

    Accepts a mapping, a list of ``{"key": k, "value": v}`` pairs (Arrow map form) or None (no
    labels). Null values are dropped; numbers and booleans become their JSON text; keys must be
    non-empty strings.
    """
    if labels is None:
        return "{}"
    if isinstance(labels, list):
        try:
            labels = {item["key"]: item["value"] for item in labels}
        except (TypeError, KeyError):
            raise _LabelError("labels must be an object of string keys and values") from None
    if not isinstance(labels, Mapping):
        raise _LabelError(f"labels must be an object of string keys and values, got {labels!r}")
    items: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not key:
            raise _LabelError(f"label keys must be non-empty strings, got {key!r}")
        if "\x00" in key or (isinstance(value, str) and "\x00" in value):
            raise _LabelError(f"label {key!r} contains a NUL character (PostgreSQL text cannot)")
        if value is None:
            continue
        if isinstance(value, str):
            items[key] = value
        elif isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
            items[key] = json.dumps(value)
        else:
            raise _LabelError(f"label {key!r} must have a string value, got {value!r}")
    if len(items) > MAX_LABELS:
        raise _LabelError(f"a label set may have at most {MAX_LABELS} labels, got {len(items)}")
    text = json.dumps(dict(sorted(items.items())), ensure_ascii=False, separators=(",", ":"))
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise _LabelError("labels must be valid Unicode text (a lone surrogate cannot be "
                          "stored)") from None
    if size > MAX_LABELS_BYTES:
        raise _LabelError(
            f"a label set may take at most {MAX_LABELS_BYTES} bytes as JSON, got {size}"
        )
    return text


def _unicode(text: str) -> bool:
    """Whether ``text`` can be encoded as UTF-8 (Python strings may hold lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def normalize(data: Any, *, on_error: OnError = "raise") -> Normalized:
    """Validate ``data`` and bring it to the normalized form (see the module docstring).

    Raises
    ------
    ValidationError
        Missing columns or wrong column types (always), or, with ``on_error="raise"``, the first
        offending row; the message names the column and the row.
    """
    if on_error not in get_args(OnError):
        raise ValidationError(f"on_error must be one of {get_args(OnError)!r}, got {on_error!r}")
    if isinstance(data, MetricPoint):
        data = [data]
    refused: dict[int, str] = {}
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        frame = _from_points(data, refused)
    elif isinstance(data, pl.DataFrame | pl.LazyFrame):  # no round trip through Arrow
        frame = data.collect() if isinstance(data, pl.LazyFrame) else data
    else:
        table = to_arrow_table(data, what="metric points")
        frame = pl.from_arrow(table)  # type: ignore[assignment]
        assert isinstance(frame, pl.DataFrame)
    return _validate(frame, on_error=on_error, refused=refused)


def _from_points(points: Sequence[Any], refused: dict[int, str]) -> pl.DataFrame:
    """The points as a frame; rows no frame can hold (a name that is no Unicode text) get a
    null in its place and their reason in ``refused``."""
    times: list[dt.datetime | None] = []
    names: list[Any] = []
    values: list[Any] = []
    labels: list[str | None] = []
    for i, point in enumerate(points):
        if not isinstance(point, MetricPoint):
            raise ValidationError(
                f"row {i}: expected a MetricPoint, got {type(point).__name__}", row=i)
        ts = point.timestamp
        if not isinstance(ts, dt.datetime):
            raise ValidationError(
                f"column 'timestamp' row {i}: expected a datetime, got {ts!r}",
                column="timestamp", row=i)
        if ts.tzinfo is not None:
            try:
                ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
            except OverflowError:
                raise ValidationError(
                    f"column 'timestamp' row {i}: timestamp {ts!r} is outside the range of "
                    "UTC datetimes", column="timestamp", row=i) from None
        times.append(ts)
        name: Any = point.metric_name
        if isinstance(name, str) and not _unicode(name):
            refused[i] = "metric_name: metric_name is not valid Unicode text (a lone surrogate)"
            name = None
        names.append(name)
        values.append(point.value)
        try:
            labels.append(canonical_labels(point.labels))
        except _LabelError:
            labels.append(json.dumps(dict(point.labels), default=repr))  # refused in _validate
    try:
        return pl.DataFrame({
            "timestamp": pl.Series(times, dtype=pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "metric_name": pl.Series(names, dtype=pl.String, strict=False),
            "value": pl.Series(values, dtype=pl.Float64, strict=False),
            "labels": pl.Series(labels, dtype=pl.String),
        })
    except (TypeError, pl.exceptions.PolarsError) as exc:
        raise ValidationError(f"metric points have values of the wrong type: {exc}") from None


def _check_columns(frame: pl.DataFrame) -> None:
    schema = frame.schema
    for name in ("timestamp", "metric_name", "value"):
        if name not in schema:
            raise ValidationError(
                f"missing column {name!r}; metric points need the columns {list(COLUMNS)!r} "
                f"(labels optional), got {list(schema)!r}",
                column=name,
            )
    if not isinstance(schema["timestamp"], pl.Datetime):
        raise ValidationError(
            f"column 'timestamp' must hold timestamps, got dtype {schema['timestamp']}",
            column="timestamp")
    if not isinstance(schema["metric_name"], pl.String | pl.Categorical | pl.Enum | pl.Null):
        raise ValidationError(
            f"column 'metric_name' must hold strings, got dtype {schema['metric_name']}",
            column="metric_name")
    value_type = schema["value"]
    if not (value_type.is_numeric() or isinstance(value_type, pl.Null)):
        raise ValidationError(
            f"column 'value' must hold numbers, got dtype {value_type}", column="value")
    labels_type = schema.get("labels")
    if labels_type is not None and not (isinstance(
        labels_type, pl.String | pl.Struct | pl.List | pl.Null) or _is_map(labels_type)
    ):
        raise ValidationError(
            "column 'labels' must hold dicts (struct or map) or JSON text, got dtype "
            f"{labels_type}", column="labels")


def _is_map(dtype: pl.DataType) -> bool:
    map_type = getattr(pl, "Map", None)  # Polars >= 2 has a Map type for Arrow maps
    return map_type is not None and isinstance(dtype, map_type)


def _series_keys(
    uniq: pl.DataFrame, labels_type: pl.DataType | None, *, wrapped: bool
) -> pl.DataFrame:
    """Check and canonicalize each distinct (metric_name, labels); one row per key."""
    canon: list[str | None] = []
    errors: list[str | None] = []
    as_text = isinstance(labels_type, pl.String) or wrapped
    names = uniq.get_column("metric_name").to_list()
    raws = uniq.get_column("labels").to_list() if labels_type is not None else [None] * len(names)
    for name, raw in zip(names, raws, strict=True):
        error: str | None = None
        text: str | None = None
        if name is None:
            error = "metric_name: metric_name is null"
        elif not name:
            error = "metric_name: metric_name is empty"
        elif len(name) > MAX_NAME_LENGTH:
            error = f"metric_name: metric_name is longer than {MAX_NAME_LENGTH} characters"
        elif "\x00" in name:
            error = "metric_name: metric_name contains a NUL character (PostgreSQL text cannot)"
        elif not _unicode(name):
            error = "metric_name: metric_name is not valid Unicode text (a lone surrogate)"
        else:
            try:
                parsed = json.loads(raw) if as_text and raw is not None else raw
                text = canonical_labels(parsed["l"] if wrapped else parsed)
            except _LabelError as exc:
                error = f"labels: {exc}"
            except json.JSONDecodeError as exc:
                error = f"labels: labels are not JSON text ({exc})"
        canon.append(None if error else text)
        errors.append(error)
    return pl.DataFrame(
        {"metric_name": names, "labels": canon, "_series_error": errors},
        schema={"metric_name": pl.String, "labels": pl.String, "_series_error": pl.String},
    )


def _validate(frame: pl.DataFrame, *, on_error: OnError,
              refused: dict[int, str] | None = None) -> Normalized:
    _check_columns(frame)
    labels_type = frame.schema.get("labels")
    if isinstance(labels_type, pl.Null):
        labels_type = None
    wrapped = labels_type is not None and _is_map(labels_type)
    if wrapped:
        # Map columns are JSON-encoded (wrapped, so null rows encode too) and parsed per series.
        frame = frame.with_columns(
            pl.struct(pl.col("labels").alias("l")).struct.json_encode().alias("labels"))
    range_bad = out_of_range(frame.get_column("timestamp"))
    keys = ["metric_name", "labels"] if labels_type is not None else ["metric_name"]
    work = frame.select(
        pl.when(range_bad).then(None).otherwise(pl.col("timestamp")).alias("timestamp"),
        range_bad.alias("_range_bad"),
        pl.col("metric_name").cast(pl.String),
        pl.col("value").cast(pl.Float64),
        *([pl.col("labels")] if labels_type is not None else []),
    )
    uniq = work.select(keys).unique(maintain_order=True)
    if uniq.height == 1:
        work = work.with_columns(pl.lit(0, pl.UInt32).alias("_key"))
    else:
        uniq_keyed = uniq.with_row_index("_key")
        work = work.join(uniq_keyed, on=keys, how="left", maintain_order="left", nulls_equal=True)
    series = _series_keys(uniq, labels_type, wrapped=wrapped)
    key_error = series.get_column("_series_error")
    row_error = (
        pl.when(pl.col("timestamp").is_null() & ~pl.col("_range_bad"))
        .then(pl.lit("timestamp: timestamp is null"))
        .when(pl.col("_range_bad"))
        .then(pl.lit(f"timestamp: timestamp is outside the range agts stores ({RANGE_TEXT})"))
        .when(pl.col("value").is_null()).then(pl.lit("value: value is null"))
        .when(pl.col("value").is_nan())
        .then(pl.lit("value: value is NaN (agts refuses NaN and infinities)"))
        .when(pl.col("value").is_infinite())
        .then(pl.lit("value: value is infinite (agts refuses NaN and infinities)"))
    )
    if key_error.null_count() < len(key_error):
        series_error = key_error.gather(work.get_column("_key"))
        errors = work.select(pl.coalesce(series_error.alias("e"), row_error)).to_series()
    else:
        errors = work.select(row_error).to_series()
    if refused:
        errors = errors.scatter(list(refused), list(refused.values()))
    bad = errors.is_not_null()
    first = first_true(bad)
    if first is not None and on_error == "raise":
        column, _, reason = str(errors[first]).partition(": ")
        shown = shown_value(frame.get_column(column), first)
        raise ValidationError(
            f"column {column!r} row {first}: {reason} (got {shown})", column=column, row=first)
    if first is None:
        skipped = _empty_skipped(frame)
        good = work
    else:
        skipped = pl.concat(
            [frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("row")),
             errors.alias("error").to_frame(), frame],
            how="horizontal",
        ).filter(bad)
        good = work.filter(~bad)
    points = good.select(
        utc_series(good.get_column("timestamp"), column="timestamp").alias("time"),
        pl.col("_key").alias("key"),
        pl.col("value"),
    )
    return Normalized(points, series.select("metric_name", "labels"), skipped)


def _empty_skipped(frame: pl.DataFrame) -> pl.DataFrame:
    return pl.concat(
        [pl.DataFrame(schema={"row": pl.UInt32, "error": pl.String}), frame.clear()],
        how="horizontal",
    )
