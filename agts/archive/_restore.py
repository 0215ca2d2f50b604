"""Restore: put archived chunk ranges back into the hot tier.

Unit by unit, in one ADBC transaction: the unit's files are read (pyarrow), copied into a
temporary staging table, inserted with ``ON CONFLICT DO NOTHING`` (so a repeated or interrupted
restore stores each row once) and the unit goes back to ``verified``. Metric points get their
series through ``agts.series``: missing series are registered, existing ones reused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from agts._args import check_range
from agts.archive._cold import ArchivedFile, read_files
from agts.archive._store import ArchiveStore
from agts.archive._tables import METRICS, TableSpec, resolve
from agts.db._database import Database

__all__ = ["restore"]

log = logging.getLogger(__name__)

_STAGE = "agts_restore_stage"

_METRICS_INSERT = f"""
INSERT INTO agts.series (metric_name, labels)
SELECT DISTINCT metric_name, jsonb_object(keys, vals) FROM pg_temp.{_STAGE}
ON CONFLICT ON CONSTRAINT series_key DO NOTHING;
INSERT INTO agts.series_latest AS l (series_id, first_time, time, value)
SELECT DISTINCT ON (s.series_id) s.series_id,
       min(st."timestamp") OVER (PARTITION BY s.series_id), st."timestamp", st.value
FROM pg_temp.{_STAGE} st
JOIN agts.series s
  ON agts.series_key(s.metric_name, s.labels)
     = agts.series_key(st.metric_name, jsonb_object(st.keys, st.vals))
 AND s.metric_name = st.metric_name AND s.labels = jsonb_object(st.keys, st.vals)
ORDER BY s.series_id, st."timestamp" DESC
ON CONFLICT (series_id) DO UPDATE SET first_time = least(l.first_time, excluded.first_time),
    time = CASE WHEN excluded.time > l.time THEN excluded.time ELSE l.time END,
    value = CASE WHEN excluded.time > l.time THEN excluded.value ELSE l.value END;
INSERT INTO agts.metric_points (time, series_id, value)
SELECT st."timestamp", s.series_id, st.value
FROM pg_temp.{_STAGE} st
JOIN agts.series s
  ON agts.series_key(s.metric_name, s.labels)
     = agts.series_key(st.metric_name, jsonb_object(st.keys, st.vals))
 AND s.metric_name = st.metric_name AND s.labels = jsonb_object(st.keys, st.vals)
ON CONFLICT DO NOTHING
"""


def restore(
    db: Database, stores: Callable[[str | None], ArchiveStore], table: str, start: Any, end: Any,
    *, root: str | None = None,
) -> int:
    """See :meth:`agts.StorageEngine.restore`; ``stores`` gives the store of a root."""
    start_utc, end_utc = check_range(start, end)
    with db.connection(f"restore {table!r}") as conn:
        spec = resolve(conn, table)
        units = conn.execute(
            """
            SELECT u.unit_id, u.root, f.path, f.bytes, f.sha256
            FROM agts.archive_units u LEFT JOIN agts.archive_files f USING (unit_id)
            WHERE u.hypertable = %s AND u.state = 'dropped'
              AND u.range_start < %s AND u.range_end > %s
            ORDER BY u.range_start, u.unit_id, f.path
            """,
            [spec.qualified, end_utc, start_utc],
        ).fetchall()
    files: dict[int, list[ArchivedFile]] = {}
    for unit_id, unit_root, path, size, sha in units:
        unit = files.setdefault(unit_id, [])
        if path is not None:
            unit.append(ArchivedFile(root if root is not None else unit_root, path, size, sha))
    # Every file is checked against its recorded size and sha256 before any row goes back: a
    # replaced or damaged file stops the restore before it changes the hot tier.
    for unit_files in files.values():
        for file in unit_files:
            stores(file.root).check(file.path, size=file.size, sha256=file.sha256)
    total = 0
    for unit_id, unit_files in files.items():
        data = (read_files(stores(unit_files[0].root), unit_files, spec) if unit_files
                else None)
        inserted = _insert(db, spec, data, unit_id)
        log.info("restored unit %s of %s: %d rows inserted", unit_id, spec.qualified, inserted)
        total += inserted
    return total


def _insert(db: Database, spec: TableSpec, data: pa.Table | None, unit_id: int) -> int:
    with db.connection(f"restore {spec.qualified}") as conn:
        insert = _metrics_stage(data) if spec.name == METRICS else None
        generic = None if spec.name == METRICS else _generic_insert(spec).as_string(conn)
    inserted = 0
    with db.adbc(f"restore {spec.qualified}") as adbc, adbc.cursor() as cur:
        if data is not None and data.num_rows:
            staged = insert if insert is not None else _drop_partition_columns(data)
            cur.execute(f"DROP TABLE IF EXISTS pg_temp.{_STAGE}")
            cur.adbc_ingest(_STAGE, staged, mode="create", temporary=True)
            # The last statement inserts the table's own rows: its row count is the answer.
            for statement in (_METRICS_INSERT.split(";") if generic is None else [generic]):
                cur.execute(statement)
            inserted = max(cur.rowcount, 0)
            cur.execute(f"DROP TABLE pg_temp.{_STAGE}")
        cur.execute("UPDATE agts.archive_units SET state = 'verified', updated_at = now() "
                    f"WHERE unit_id = {int(unit_id)} AND state = 'dropped'")
        adbc.commit()
    return inserted


def _drop_partition_columns(data: pa.Table) -> pa.Table:
    names = [n for n in data.column_names if n not in ("date", "table")]
    return data.select(names)


def _metrics_stage(data: pa.Table | None) -> pa.Table | None:
    """``timestamp, metric_name, value, labels(map)`` → labels as two text arrays for SQL."""
    if data is None:
        return None
    labels = data.column("labels").combine_chunks()
    if not isinstance(labels, pa.MapArray):
        labels = labels.cast(pa.map_(pa.string(), pa.string()))
    offsets = pc.subtract(labels.offsets, labels.offsets[0])
    keys = pa.ListArray.from_arrays(offsets, labels.keys)
    vals = pa.ListArray.from_arrays(offsets, labels.items)
    return pa.table({
        "timestamp": data.column("timestamp"), "metric_name": data.column("metric_name"),
        "value": data.column("value"), "keys": keys, "vals": vals,
    })


def _generic_insert(spec: TableSpec) -> sql.Composed:
    columns = [sql.Identifier(c) for c, _ in spec.columns]
    values = [sql.SQL("{}::{}").format(sql.Identifier(c), sql.SQL(t)) for c, t in spec.columns]
    return sql.SQL("INSERT INTO {} ({}) SELECT {} FROM pg_temp.{} ON CONFLICT DO NOTHING").format(
        spec.identifier, sql.SQL(", ").join(columns), sql.SQL(", ").join(values),
        sql.Identifier(_STAGE))
