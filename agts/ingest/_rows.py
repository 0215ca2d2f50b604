"""The fast way in for :class:`MetricPoint` objects: checked in plain Python, kept as lists.

A bot's monitor puts points one at a time. Sending each through the Polars validation of
:mod:`agts.ingest._normalize` costs milliseconds of fixed overhead per call; checking one point in
Python costs microseconds. :func:`point_rows` checks points that are plainly valid and keeps them
as :class:`PointRows`, columns of Python values that the pipeline appends to while they wait, and
turns into one normalized batch when a batch is cut.

Anything unusual (a point that would be refused, a type that needs Polars' conversions) makes
:func:`point_rows` answer ``None``, and the caller takes the general path, which gives the
documented errors. Both paths produce the same stored values.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any, get_args

import polars as pl

from agts._arrow import END_MICROS, MIN_MICROS
from agts.errors import ValidationError
from agts.ingest._normalize import (
    Normalized,
    _LabelError,
    _unicode,
    canonical_labels,
    normalize,
)
from agts.ingest._types import MAX_NAME_LENGTH, MetricPoint, OnError

__all__ = ["PointRows", "as_normalized", "normalize_points", "point_rows"]

_EPOCH = dt.datetime(1970, 1, 1)
_MICRO = dt.timedelta(microseconds=1)
_SKIPPED = pl.DataFrame(schema={
    "row": pl.UInt32, "error": pl.String, "timestamp": pl.Datetime("us", "UTC"),
    "metric_name": pl.String, "value": pl.Float64, "labels": pl.String})
#: Canonical label texts by label items: a bot repeats a few label sets millions of times.
_LABELS_CACHE: dict[tuple[Any, ...], str] = {}
_LABELS_CACHE_SIZE = 4096


class PointRows:
    """Checked points as columns of Python values: epoch microseconds, metric names, canonical
    label texts and float values."""

    __slots__ = ("labels", "micros", "names", "values")

    def __init__(self, micros: list[int], names: list[str], labels: list[str],
                 values: list[float]) -> None:
        self.micros = micros
        self.names = names
        self.labels = labels
        self.values = values

    @property
    def height(self) -> int:
        return len(self.micros)

    def extend(self, other: PointRows) -> None:
        """Append ``other``'s points (the pipeline merges consecutive puts this way)."""
        self.micros.extend(other.micros)
        self.names.extend(other.names)
        self.labels.extend(other.labels)
        self.values.extend(other.values)

    def slice(self, offset: int, length: int | None = None) -> PointRows:
        end = None if length is None else offset + length
        return PointRows(self.micros[offset:end], self.names[offset:end],
                         self.labels[offset:end], self.values[offset:end])

    def normalized(self) -> Normalized:
        """The points as a normalized batch (one series row per distinct name and labels)."""
        keys: dict[tuple[str, str], int] = {}
        key = [keys.setdefault(k, len(keys)) for k in zip(self.names, self.labels, strict=True)]
        series = pl.DataFrame({"metric_name": [k[0] for k in keys],
                               "labels": [k[1] for k in keys]},
                              schema={"metric_name": pl.String, "labels": pl.String})
        points = pl.DataFrame([
            pl.Series("time", self.micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            pl.Series("key", key, dtype=pl.UInt32),
            pl.Series("value", self.values, dtype=pl.Float64),
        ])
        return Normalized(points, series)


def point_rows(data: Any) -> PointRows | None:
    """``data`` (a MetricPoint or a list/tuple of them) as checked rows, or None when any point
    needs the general path (which explains what is wrong with it)."""
    if isinstance(data, MetricPoint):
        data = (data,)
    elif not isinstance(data, list | tuple):
        return None
    micros: list[int] = []
    names: list[str] = []
    labels: list[str] = []
    values: list[float] = []
    for point in data:
        checked = _check(point)
        if checked is None:
            return None
        micros.append(checked[0])
        names.append(point.metric_name)
        labels.append(checked[1])
        values.append(checked[2])
    return PointRows(micros, names, labels, values)


def _check(point: Any) -> tuple[int, str, float] | None:
    if type(point) is not MetricPoint:
        return None
    ts, name, value = point.timestamp, point.metric_name, point.value
    if not isinstance(ts, dt.datetime) or type(name) is not str:
        return None
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name or not _unicode(name):
        return None
    if isinstance(value, bool) or not isinstance(value, float | int):
        return None
    try:
        number = float(value)
        if ts.tzinfo is not None:
            ts = ts.astimezone(dt.UTC).replace(tzinfo=None)
        text = _canonical(point.labels)
    except (OverflowError, _LabelError):
        return None
    if not math.isfinite(number):
        return None
    micros = (ts - _EPOCH) // _MICRO
    if not MIN_MICROS <= micros < END_MICROS:
        return None
    return micros, text, number


def _canonical(labels: Any) -> str:
    """:func:`canonical_labels`, remembered for label sets seen before."""
    if type(labels) is not dict:
        return canonical_labels(labels)
    try:
        items = tuple(labels.items())
        text = _LABELS_CACHE.get(items)
    except TypeError:  # an unhashable value: refused by canonical_labels below
        return canonical_labels(labels)
    if text is None:
        text = canonical_labels(labels)
        if len(_LABELS_CACHE) >= _LABELS_CACHE_SIZE:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[items] = text
    return text


def normalize_points(data: Any, *, on_error: OnError = "raise") -> Normalized:
    """:func:`~agts.ingest._normalize.normalize`, through :func:`point_rows` when it can."""
    if on_error not in get_args(OnError):
        raise ValidationError(f"on_error must be one of {get_args(OnError)!r}, got {on_error!r}")
    rows = point_rows(data)
    if rows is None:
        return normalize(data, on_error=on_error)
    batch = rows.normalized()
    return Normalized(batch.points, batch.series, empty_skipped_points())


def empty_skipped_points() -> pl.DataFrame:
    """What ``put``/``insert_metrics_batch`` return as skipped rows for MetricPoint input with
    nothing refused (the general path's columns and dtypes)."""
    return _SKIPPED.clear()  # a new frame each time (50 us less than building the schema)


def as_normalized(parts: Sequence[Normalized | PointRows]) -> Normalized:
    """One normalized batch from the pipeline's pending parts."""
    return Normalized.concat([p.normalized() if isinstance(p, PointRows) else p for p in parts])
