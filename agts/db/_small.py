"""Small results over psycopg instead of ADBC.

For a result of a few hundred rows, ADBC's fixed costs dominate: it prepares a parameterized
statement in a round trip of its own before executing it, and its per-query overhead is
~0.3 ms. psycopg sends parse, bind and execute at once. Its binary rows are turned into the same
Arrow types ADBC gives (timestamps read as integers, never as Python datetimes, which Polars and
pyarrow convert slowly). Used by :meth:`agts.db.Database.fetch_arrow` when the caller knows the
result is small (``rows_hint``); measured on the TSBS workload (benchmarks/bench_tsbs.py), a
60-row aggregate takes ~0.5 ms this way and ~1.1 ms over ADBC; past ~600 rows ADBC's columnar
decoding wins (2,000 raw points: 2.4 ms here, ~2 ms over ADBC).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.adapt import Loader
from psycopg.pq import Format

__all__ = ["SMALL_ROWS", "fetch_small"]

#: Results up to this many rows (by the caller's estimate) take the psycopg path.
SMALL_ROWS = 600

_Y2K_MICROS = 946_684_800_000_000  # PostgreSQL's timestamp epoch, 2000-01-01, in Unix micros


class _Micros(Loader):
    """A binary timestamp(tz) as microseconds since 2000-01-01 (an int, not a datetime)."""

    format = Format.BINARY

    def load(self, data: Any) -> int:
        return int.from_bytes(data, "big", signed=True)


_TIMESTAMPS = {1184: pa.timestamp("us", tz="UTC"), 1114: pa.timestamp("us")}
_ARROW: dict[int, pa.DataType] = {
    701: pa.float64(), 700: pa.float32(), 20: pa.int64(), 23: pa.int32(), 21: pa.int16(),
    16: pa.bool_(), 25: pa.string(), 1043: pa.string(), 19: pa.string(),
}


class _Unsupported(Exception):
    """A column type this path does not convert; the caller uses ADBC instead."""


@functools.lru_cache(maxsize=512)
def _placeholders(query: str) -> str:
    """``$n`` placeholders as psycopg's ``%(pn)s`` (a literal ``%`` doubled)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", query.replace("%", "%%"))


def fetch_small(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...]
                ) -> pa.Table | None:
    """The result of ``query`` (``$n`` placeholders) as Arrow, or None when a column has a type
    this path does not convert (the caller then asks ADBC)."""
    cur = conn.cursor(binary=True)
    cur.adapters.register_loader("timestamptz", _Micros)
    cur.adapters.register_loader("timestamp", _Micros)
    cur.execute(_placeholders(query), {f"p{i + 1}": v for i, v in enumerate(params)})
    description = cur.description or []
    rows = cur.fetchall()
    columns: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * len(description)
    try:
        arrays = [_array(d.type_code, list(values)) for d, values in zip(
            description, columns, strict=True)]
    except (_Unsupported, pa.ArrowInvalid):
        return None
    return pa.Table.from_arrays(arrays, names=[d.name for d in description])


def _array(oid: int, values: list[Any]) -> pa.Array:
    stamp = _TIMESTAMPS.get(oid)
    if stamp is not None:
        micros = pc.add_checked(pa.array(values, pa.int64()), _Y2K_MICROS)  # infinity: invalid
        return micros.cast(stamp)
    arrow = _ARROW.get(oid)
    if arrow is None:
        raise _Unsupported(oid)
    return pa.array(values, arrow)
