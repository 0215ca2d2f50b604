"""Series resolution (metric name + label filters -> series ids) and the Arrow fetch helper.

Labels live once per series in ``agts.series``; a query first finds the matching series (a small
psycopg query served by the ``metric_name`` index and the GIN index of labels), then scans
``agts.metric_points`` by ``series_id = ANY(...)`` and time, which the unique ``(series_id, time)``
index answers. Labels are joined back on the client, once per series, not once per point.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from typing import Any

import polars as pl
import pyarrow as pa

from agts.db._database import Database
from agts.errors import translate

__all__ = ["SERIES_SCHEMA", "fetch_arrow", "label_struct", "resolve_series"]

log = logging.getLogger(__name__)

SERIES_SCHEMA = {"series_id": pl.Int32, "metric_name": pl.String, "labels_json": pl.String}


def resolve_series(
    db: Database, metric_names: Sequence[str], labels: dict[str, str],
    labels_in: dict[str, list[str]],
) -> pl.DataFrame:
    """The series of ``metric_names`` whose labels match: ``series_id``, ``metric_name``,
    ``labels_json`` (canonical JSON text), ordered by series id."""
    where = ["metric_name = ANY(%s::text[])"]
    params: list[Any] = [list(metric_names)]
    if labels:
        where.append("labels @> %s::jsonb")
        params.append(json.dumps(labels))
    for key, values in labels_in.items():
        where.append("labels ->> %s = ANY(%s::text[])")
        params.extend([key, values])
    query = ("SELECT series_id, metric_name, labels::text FROM agts.series WHERE "
             + " AND ".join(where) + " ORDER BY series_id")
    try:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(query, params)  # query built from this module's constants only
            rows = cur.fetchall()
    except Exception as exc:
        raise translate(exc, action="resolve metric series") from exc
    return pl.DataFrame(rows, schema=SERIES_SCHEMA, orient="row")


def label_struct(labels_json: pl.Series) -> pl.Series:
    """JSON label sets as a struct with one String field per key present (sorted by key); a
    series without a key has null in that field."""
    return _label_struct(tuple(labels_json.to_list()))


@functools.lru_cache(maxsize=256)
def _label_struct(texts: tuple[str, ...]) -> pl.Series:
    # A series' labels never change, so the struct of a set of series can be kept: a service
    # asking the same question in a loop decodes them once.
    keys: set[str] = set()
    for text in texts:
        keys.update(json.loads(text))
    dtype = pl.Struct({key: pl.String for key in sorted(keys)})
    if not texts:
        return pl.Series("labels", [], dtype=dtype)
    return pl.Series("labels", texts, dtype=pl.String).str.json_decode(dtype)


def fetch_arrow(db: Database, query: str, params: Sequence[Any], *, action: str) -> pa.Table:
    """Run one SELECT with ``$n`` parameters on a pooled ADBC connection; the whole result as Arrow.

    ``query`` is built from this package's constants; values are bound parameters, or (raw
    points, see :mod:`agts.query._raw`) psycopg.sql literals of ids and datetimes agts produced.
    """
    try:
        with db.adbc() as conn, conn.cursor() as cur:
            cur.execute(query, parameters=tuple(params) or None)
            table: pa.Table = cur.fetch_arrow_table()
    except Exception as exc:
        raise translate(exc, action=action) from exc
    return table
