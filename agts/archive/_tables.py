"""Which hypertables the cold tier knows, and how each one's rows leave the database.

Everything here is generic over "a hypertable and its time column": the table list is read from
TimescaleDB's catalog, and each column is exported with a type every Parquet reader understands
(uuid, jsonb and numeric as text). Metric points are the one special case: they are exported
denormalized as the seed's ``metrics`` (``timestamp, metric_name, value, labels``), labels as a
``map<string, string>``, so other engines can filter on names and labels; ``series_id`` comes along
(agts resolves label filters to series ids and prunes the files' row groups on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import sql

from agts.errors import ValidationError

__all__ = [
    "METRICS",
    "SCHEMA_VERSION",
    "Chunk",
    "TableKind",
    "TableSpec",
    "chunks",
    "resolve",
    "table_specs",
]

#: Version of the Parquet layout agts writes; recorded per file, bumped when the layout changes.
#: 1: metric points ``timestamp, metric_name, value, labels`` in time order, a JSON manifest beside
#: them. 2: ``series_id`` added, rows sorted by series then time, files registered in Iceberg.
SCHEMA_VERSION = 2

#: The archive name of metric points.
METRICS = "metrics"

TableKind = Literal["metrics", "execution", "market", "other"]

_EXECUTION = {"orders", "order_events", "fills", "position_snapshots", "risk_decisions"}
_MARKET = {"market_quotes"}
_AS_TEXT = {"uuid", "jsonb", "json", "numeric"}


@dataclass(frozen=True)
class TableSpec:
    """One hypertable as the cold tier sees it.

    Attributes
    ----------
    name : str
        Name in the archive (``table=<name>/``); ``metrics`` for ``agts.metric_points``.
    schema, table : str
        The hypertable.
    time_column : str
        Its time dimension (``time`` for metric points, ``timestamp`` for execution tables).
    kind : {"metrics", "execution", "market", "other"}
        Which retention setting applies.
    columns : tuple of (name, type)
        The hypertable's columns and PostgreSQL types, in order.
    compression_enabled : bool
        Whether columnstore is configured for it (Community edition).
    """

    name: str
    schema: str
    table: str
    time_column: str
    kind: TableKind
    columns: tuple[tuple[str, str], ...]
    compression_enabled: bool = False

    @property
    def qualified(self) -> str:
        """``schema.table``."""
        return f"{self.schema}.{self.table}"

    @property
    def identifier(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    @property
    def archive_time_column(self) -> str:
        """The time column's name in the Parquet files."""
        return "timestamp" if self.name == METRICS else self.time_column

    def where(self, start: datetime, end: datetime, metric_name: str | None = None) -> sql.Composed:
        """``[start, end)`` (and one metric's series) as literals, for unparameterized queries."""
        where = sql.SQL("{t} >= {a} AND {t} < {b}").format(
            t=sql.Identifier(self.time_column), a=sql.Literal(start), b=sql.Literal(end))
        if metric_name is not None:
            where = sql.SQL("{} AND series_id IN (SELECT series_id FROM agts.series "
                            "WHERE metric_name = {})").format(where, sql.Literal(metric_name))
        return where

    def select_range(self, start: datetime, end: datetime,
                     metric_name: str | None = None) -> sql.Composed:
        """The unparameterized query that streams ``[start, end)`` out (literals, so ADBC streams)."""
        where = self.where(start, end, metric_name)
        if self.name == METRICS:
            # Sorted by series, then time: the order of the cold tier's files.
            return sql.SQL("SELECT time AS timestamp, series_id, value FROM {} WHERE {} "
                           "ORDER BY series_id, time").format(self.identifier, where)
        items: list[sql.Composable] = []
        for column, type_ in self.columns:
            ident = sql.Identifier(column)
            if type_ in _AS_TEXT:
                items.append(sql.SQL("{}::text AS {}").format(ident, ident))
            else:
                items.append(ident)
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(items), self.identifier, where)


@dataclass(frozen=True)
class Chunk:
    """One chunk of a hypertable: its name and the time range it covers."""

    schema: str
    name: str
    range_start: datetime
    range_end: datetime
    is_compressed: bool


def _kind(table: str) -> TableKind:
    if table == "metric_points":
        return "metrics"
    if table in _EXECUTION:
        return "execution"
    if table in _MARKET:
        return "market"
    return "other"


def table_specs(conn: psycopg.Connection[Any], *, schema: str = "agts") -> dict[str, TableSpec]:
    """Every hypertable of ``schema`` with a time dimension, by archive name."""
    rows = conn.execute(
        """
        SELECT h.hypertable_name, d.column_name, h.compression_enabled
        FROM timescaledb_information.hypertables h
        JOIN timescaledb_information.dimensions d
          ON d.hypertable_schema = h.hypertable_schema AND d.hypertable_name = h.hypertable_name
         AND d.dimension_number = 1
        WHERE h.hypertable_schema = %s AND d.dimension_type = 'Time'
        ORDER BY h.hypertable_name
        """,
        [schema],
    ).fetchall()
    specs: dict[str, TableSpec] = {}
    for table, time_column, compression in rows:
        columns = conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, NULL)
            FROM pg_attribute a
            WHERE a.attrelid = format('%%I.%%I', %s::text, %s::text)::regclass
              AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            [schema, table],
        ).fetchall()
        name = METRICS if table == "metric_points" else table
        specs[name] = TableSpec(
            name=name, schema=schema, table=table, time_column=time_column, kind=_kind(table),
            columns=tuple((c, t) for c, t in columns), compression_enabled=bool(compression),
        )
    return specs


def resolve(conn: psycopg.Connection[Any], table: str) -> TableSpec:
    """The spec of ``table``: an archive name (``metrics``, ``orders``), a hypertable name
    (``metric_points``) or a qualified one (``agts.fills``).

    Raises
    ------
    ValidationError
        No such hypertable; the message lists the known names.
    """
    if not isinstance(table, str) or not table or "\x00" in table:
        raise ValidationError(f"table must be a table name, got {table!r}")
    schema, _, bare = table.rpartition(".")
    specs = table_specs(conn, schema=schema or "agts")
    for spec in specs.values():
        if bare in (spec.name, spec.table):
            return spec
    raise ValidationError(
        f"table must be one of {sorted(specs)!r} (or a hypertable name), got {table!r}")


def chunks(
    conn: psycopg.Connection[Any], spec: TableSpec, *,
    start: datetime | None = None, end: datetime | None = None,
) -> list[Chunk]:
    """The chunks lying entirely inside ``[start, end)`` (None: unbounded), oldest first."""
    rows = conn.execute(
        """
        SELECT chunk_schema, chunk_name, range_start, range_end, is_compressed
        FROM timescaledb_information.chunks
        WHERE hypertable_schema = %s AND hypertable_name = %s
          AND (%s::timestamptz IS NULL OR range_start >= %s::timestamptz)
          AND (%s::timestamptz IS NULL OR range_end <= %s::timestamptz)
        ORDER BY range_start
        """,
        [spec.schema, spec.table, start, start, end, end],
    ).fetchall()
    return [Chunk(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]
