"""Argument checks of the query API (metric names, labels, buckets, aggregations, cursors), done
before any database work; times, ranges, choices and positive integers follow the shared rules of
:mod:`agts._args`.

Every check raises :class:`~agts.errors.ValidationError` with a lower-case message that names the
argument, shows the value with ``!r`` and says what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from agts._args import EPOCH, to_utc
from agts.errors import ValidationError

__all__ = [
    "AGGREGATIONS",
    "EPOCH",
    "Aggregation",
    "GapFill",
    "Shape",
    "bucket_micros",
    "check_labels",
    "check_labels_in",
    "check_metric_name",
    "format_cursor",
    "parse_aggregations",
    "parse_bucket",
    "parse_cursor",
]

#: How empty buckets are filled (``fill=``): not to be confused with the :class:`agts.Fill` record.
GapFill = Literal["null", "forward"]
Shape = Literal["long", "wide"]

#: Aggregations a rollup answers exactly (percentiles need every point and go to raw data).
ROLLUP_AGGREGATIONS = ("avg", "min", "max", "sum", "count", "first", "last", "stddev")
#: The named aggregations; ``pNN`` / ``pNN.N`` percentiles come on top.
AGGREGATIONS = (*ROLLUP_AGGREGATIONS, "median")
Aggregation = Literal["avg", "min", "max", "sum", "count", "first", "last", "stddev", "median"]

_PERCENTILE = re.compile(r"^p([0-9]{1,3})(?:\.([0-9]{1,3}))?$")
_BUCKET = re.compile(r"^\s*([0-9]+)\s*(us|ms|s|m|h|d|w)\s*$")
_UNIT_MICROS = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000,
                "d": 86_400_000_000, "w": 7 * 86_400_000_000}


def check_metric_name(name: Any, *, what: str = "metric_name") -> str:
    if not isinstance(name, str) or not name:
        raise ValidationError(f"{what} must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValidationError(f"{what} must not contain a NUL character, got {name!r}")
    return name


def check_labels(labels: Any) -> dict[str, str]:
    """Exact-match label filters: a mapping of string keys to string values."""
    if labels is None:
        return {}
    if not isinstance(labels, Mapping):
        raise ValidationError(f"labels must be a mapping of strings to strings, got {labels!r}")
    for key, value in labels.items():
        if not isinstance(key, str) or not key or not isinstance(value, str) or (
                "\x00" in key or "\x00" in value):
            raise ValidationError(
                "labels must map non-empty string keys to string values without NUL characters, "
                f"got {key!r}: {value!r}")
    return dict(labels)


def check_labels_in(labels_in: Any) -> dict[str, list[str]]:
    """Set filters: a mapping of string keys to non-empty sequences of strings."""
    if labels_in is None:
        return {}
    if not isinstance(labels_in, Mapping):
        raise ValidationError(
            f"labels_in must be a mapping of strings to lists of strings, got {labels_in!r}")
    out: dict[str, list[str]] = {}
    for key, values in labels_in.items():
        if (not isinstance(key, str) or not key or isinstance(values, str)
                or not isinstance(values, Sequence | set | frozenset) or not values
                or not all(isinstance(v, str) and "\x00" not in v for v in values)
                or "\x00" in key):
            raise ValidationError(
                "labels_in must map non-empty string keys to non-empty lists of strings, "
                f"got {key!r}: {values!r}")
        out[key] = sorted(set(values))
    return out


def parse_bucket(bucket: Any) -> timedelta:
    """A bucket width from a ``timedelta`` or a string like ``"15s"``, ``"1m"``, ``"1h"``, ``"1d"``.

    Units: ``us``, ``ms``, ``s``, ``m`` (minutes), ``h``, ``d``, ``w``. Calendar units (months,
    years) have no fixed width and are refused.
    """
    if isinstance(bucket, str):
        match = _BUCKET.match(bucket)
        if not match:
            raise ValidationError(
                f"bucket must be a timedelta or a duration like '15s', '1m', '1h', '1d' "
                f"(units us, ms, s, m, h, d, w), got {bucket!r}")
        micros = int(match.group(1)) * _UNIT_MICROS[match.group(2)]
        delta = timedelta(microseconds=micros)
    elif isinstance(bucket, timedelta):
        delta = bucket
    else:
        raise ValidationError(
            f"bucket must be a timedelta or a duration string like '1m', got {bucket!r}")
    if delta <= timedelta(0):
        raise ValidationError(f"bucket must be a positive duration, got {bucket!r}")
    return delta


def bucket_micros(bucket: timedelta) -> int:
    return bucket // timedelta(microseconds=1)


@dataclass(frozen=True)
class AggSpec:
    """One requested aggregation: its output column name and, for percentiles, the fraction."""

    name: str
    fraction: float | None = None

    @property
    def rollup_ok(self) -> bool:
        return self.name in ROLLUP_AGGREGATIONS


def parse_aggregations(aggregation: Any) -> tuple[AggSpec, ...]:
    """One aggregation or several: ``"avg"``, ``["min", "max", "p99"]``. Percentiles are
    ``p0``..``p100`` with up to three decimals (``"p99.9"``); ``"median"`` is ``p50``."""
    items = [aggregation] if isinstance(aggregation, str) else aggregation
    if not isinstance(items, Sequence) or isinstance(items, str) or not items:
        raise ValidationError(
            f"aggregation must be a name or a non-empty list of names, got {aggregation!r}")
    specs: list[AggSpec] = []
    for item in items:
        if not isinstance(item, str):
            raise ValidationError(f"aggregation names must be strings, got {item!r}")
        name = item.strip().lower()
        if name == "median":
            specs.append(AggSpec("median", 0.5))
            continue
        match = _PERCENTILE.match(name)
        if match:
            fraction = float(f"{match.group(1)}.{match.group(2) or 0}") / 100
            if fraction > 1:
                raise ValidationError(f"percentile must be between p0 and p100, got {item!r}")
            specs.append(AggSpec(name, fraction))
        elif name in get_args(Aggregation):
            specs.append(AggSpec(name))
        else:
            raise ValidationError(
                f"unknown aggregation {item!r}; choose from {get_args(Aggregation)!r} or a "
                "percentile such as 'p50', 'p99', 'p99.9'")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValidationError(f"aggregation lists a name twice: {list(items)!r}")
    return tuple(specs)


def format_cursor(timestamp: datetime, series_id: int) -> str:
    """The keyset cursor after one row: ``<ISO timestamp>/<series id>``."""
    return f"{to_utc(timestamp, name='timestamp').isoformat()}/{int(series_id)}"


def parse_cursor(after: Any) -> tuple[datetime, int] | None:
    """``after=`` as (timestamp, series_id): a cursor string from :func:`agts.next_cursor`."""
    if after is None:
        return None
    if isinstance(after, str) and "/" in after:
        text, _, sid = after.rpartition("/")
        try:
            return to_utc(datetime.fromisoformat(text), name="after"), int(sid)
        except ValueError:
            pass
    raise ValidationError(
        f"after must be a cursor from agts.next_cursor(page) such as "
        f"'2024-01-01T00:00:00+00:00/17', got {after!r}")
