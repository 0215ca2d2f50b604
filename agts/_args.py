"""Argument rules shared by every public function: times, ranges, positive integers, choices and
``tiers``. Each rule has one message, lower-case, naming the argument and showing the value.

Times. Every public function taking a time accepts the same things:

- a ``datetime`` (also ``pandas.Timestamp``, a subclass): timezone-aware values are converted to
  UTC; **naive values are UTC** (labelled, never shifted by the machine's zone);
- a ``date``: its UTC midnight;
- an ISO 8601 string (``"2026-01-02"``, ``"2026-01-02T10:00:00Z"``, ``"...+02:00"``; naive text is
  UTC);
- a ``numpy.datetime64`` (always UTC);

and gives a timezone-aware UTC ``datetime``. Precision is microseconds (finer digits are
truncated towards the past). ``None``, ``NaT`` and other types are refused with
:class:`~agts.errors.ValidationError`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, get_args

from agts.errors import ValidationError

__all__ = [
    "TIERS",
    "Tiers",
    "TimeLike",
    "check_choice",
    "check_positive_int",
    "check_range",
    "check_tiers",
    "optional_utc",
    "to_utc",
]

#: What a time argument may be (a ``numpy.datetime64`` is accepted too).
TimeLike = datetime | date | str
Tiers = Literal["hot", "cold", "all"]
TIERS: tuple[str, ...] = get_args(Tiers)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KINDS = "a datetime, a date, an ISO 8601 string or a numpy.datetime64"


def to_utc(value: Any, *, name: str) -> datetime:
    """``value`` as a timezone-aware UTC datetime under the module's rules.

    Raises
    ------
    ValidationError
        Not one of the accepted kinds, a text that is not ISO 8601, ``NaT``, or an instant
        outside the range of Python datetimes; the message names ``name``.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z"))
                                           else text)
        except ValueError:
            raise ValidationError(f"{name} must be {_KINDS}, got {value!r}", column=name) from None
    elif type(value).__name__ == "datetime64" and type(value).__module__ == "numpy":
        value = _from_datetime64(value, name=name)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime) or _is_nat(value):
        shown = f"{type(value).__name__} {value!r}" if not isinstance(value, str) else repr(value)
        raise ValidationError(f"{name} must be {_KINDS}, got {shown}", column=name)
    if value.tzinfo is None or value.utcoffset() is None:
        out = value.replace(tzinfo=UTC)
    else:
        try:
            out = value.astimezone(UTC)
        except OverflowError:
            raise ValidationError(
                f"{name} {value!r} is outside the range of UTC datetimes", column=name) from None
    if type(out) is not datetime:  # pandas.Timestamp: a plain datetime (nanoseconds truncated)
        out = datetime(out.year, out.month, out.day, out.hour, out.minute, out.second,
                       out.microsecond, tzinfo=UTC)
    return out


def _is_nat(value: datetime) -> bool:
    return type(value).__name__ == "NaTType"


def _from_datetime64(value: Any, *, name: str) -> datetime:
    import numpy as np

    if np.isnat(value):
        raise ValidationError(f"{name} must be {_KINDS}, got numpy.datetime64('NaT')",
                              column=name)
    micros = int(value.astype("datetime64[us]").astype(np.int64))
    try:
        return (EPOCH + timedelta(microseconds=micros)).replace(tzinfo=None)
    except OverflowError:
        raise ValidationError(
            f"{name} {value!r} is outside the range of Python datetimes", column=name) from None


def optional_utc(value: Any, *, name: str) -> datetime | None:
    """None, or :func:`to_utc` of ``value``."""
    return None if value is None else to_utc(value, name=name)


def check_range(start: Any, end: Any) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC; ``end`` must not be before ``start``."""
    start_utc, end_utc = to_utc(start, name="start"), to_utc(end, name="end")
    if end_utc < start_utc:
        raise ValidationError(
            f"end must not be before start, got start={start_utc.isoformat()!r} "
            f"end={end_utc.isoformat()!r}", column="end")
    return start_utc, end_utc


def check_choice(value: Any, choices: Any, *, name: str, optional: bool = False) -> Any:
    """``value`` if it is one of the ``Literal`` ``choices`` (or None when ``optional``)."""
    allowed = get_args(choices)
    if value is None and optional:
        return None
    if not isinstance(value, str | int | bool | type(None)) or value not in allowed:
        raise ValidationError(f"{name} must be one of {allowed!r}, got {value!r}")
    return value


def check_tiers(tiers: Any) -> Tiers:
    """``tiers`` if it is one of :data:`TIERS`."""
    result: Tiers = check_choice(tiers, Tiers, name="tiers")
    return result


def check_positive_int(value: Any, *, name: str, maximum: int | None = None,
                       maximum_name: str = "query.max_results") -> int:
    """A positive ``int`` (not a bool), at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(f"{name} must be a positive integer, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValidationError(
            f"{name} must be at most {maximum} ({maximum_name}), got {value!r}; page with "
            "limit= and after=, or stream with iter_batches=True")
    return value
