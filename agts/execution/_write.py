"""The one write path for execution records: Arrow → ADBC COPY into a temporary staging table of
the target's types → checks → ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, all in one
transaction (rows staged twice with the same payload collapse in that insert).

A call first locks its table's row of ``agts.locks`` (``FOR UPDATE``, for the transaction), so the
checks below and the insert see the same committed rows no matter how many agts writers run at
once; only roles that may write can take that lock, so a reader cannot hold writers up:

* a key staged twice with different payloads, or already stored with a different payload, is a
  :class:`~agts.errors.ConflictError` naming the first differing column; the same payload again is
  skipped (idempotent);
* kind-specific integrity is a :class:`~agts.errors.ConstraintError` naming the constraint, the
  record and the values: client_order_id uniqueness; a fill's order exists and matches its venue,
  market and side; a fill is not dated before its order; the fills of an order add up to at most
  its size (within :data:`~agts.execution._schema.FILL_TOLERANCE` of it, counting the fills stored
  before, also archived ones: ``agts.order_ids.filled_size``); a reported ``filled_size`` is at
  most the order's size; no status follows a final one.

Nothing of a batch is written unless every row passes: a batch with one refused row is refused
whole.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
from psycopg import sql

from agts.db._database import Database
from agts.errors import ConflictError, ConstraintError, StorageError
from agts.execution._schema import FILL_TOLERANCE, TERMINAL_STATUSES, TableSpec

__all__ = ["write"]

log = logging.getLogger(__name__)

_STAGE = "agts_stage"
_NEW = _STAGE


def _render(query: sql.Composable) -> str:
    return query.as_string(None)


def _cols(names: tuple[str, ...], prefix: str | None = None) -> sql.Composable:
    if prefix is None:
        return sql.SQL(", ").join(sql.Identifier(n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)


def _texts(names: tuple[str, ...], prefix: str) -> sql.Composable:
    return sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(
        sql.SQL("{}::text").format(sql.Identifier(prefix, n)) for n in names))


def _key_match(spec: TableSpec, left: str, right: str) -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, k))
        for k in spec.key
    )


def _target(spec: TableSpec) -> sql.Identifier:
    return sql.Identifier("agts", spec.kind)


def _jsonb_columns(spec: TableSpec) -> list[str]:
    """Statements turning staged JSON text into jsonb (ADBC cannot send jsonb, arrow-adbc #3293)."""
    return [
        _render(sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE jsonb USING {}::jsonb").format(
            sql.Identifier(_STAGE), sql.Identifier(c.name), sql.Identifier(c.name)))
        for c in spec.columns if c.type == "jsonb"
    ]


def _batch_conflict(spec: TableSpec) -> str:
    """Keys staged more than once with different payloads (cheap when no key repeats)."""
    return _render(sql.SQL(
        "SELECT {texts} FROM (SELECT DISTINCT * FROM {new} WHERE ({key}) IN "
        "(SELECT {key} FROM {new} GROUP BY {key} HAVING count(*) > 1)) n "
        "GROUP BY {nkey} HAVING count(*) > 1 LIMIT 1"
    ).format(texts=_texts(spec.key, "n"), new=sql.Identifier(_NEW), key=_cols(spec.key),
             nkey=_cols(spec.key, "n")))


def _stored_conflict(spec: TableSpec) -> str:
    return _render(sql.SQL(
        "SELECT {}, {} FROM {} n JOIN {} t ON {} WHERE ({}) IS DISTINCT FROM ({}) LIMIT 1"
    ).format(_texts(spec.names, "n"), _texts(spec.names, "t"), sql.Identifier(_NEW),
             _target(spec), _key_match(spec, "n", "t"), _cols(spec.names, "n"),
             _cols(spec.names, "t")))


def _insert(spec: TableSpec) -> str:
    return _render(sql.SQL(
        "WITH ins AS (INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO NOTHING "
        "RETURNING 1) SELECT count(*) FROM ins"
    ).format(_target(spec), _cols(spec.names), _cols(spec.names), sql.Identifier(_NEW),
             _cols(spec.conflict_target)))


_TERMINAL = sql.SQL(", ").join(sql.Literal(s) for s in TERMINAL_STATUSES)
#: ``size * _TOLERANCE``: how far fills may add up past an order's size (written as a difference,
#: so an order as large as a double allows overflows nothing).
_TOLERANCE = repr(FILL_TOLERANCE)

# Kind-specific checks: (constraint, query). Each query returns at most one offending row.
_CHECKS: dict[str, list[tuple[str, str]]] = {
    "orders": [
        ("order_ids_client_order_id_key", f"""
            SELECT client_order_id, min(id::text), max(id::text) FROM {_NEW}
            GROUP BY client_order_id HAVING count(DISTINCT id) > 1 LIMIT 1"""),
        ("order_ids_client_order_id_key", f"""
            SELECT n.client_order_id, n.id::text, r.id::text FROM {_NEW} n
            JOIN agts.order_ids r ON r.client_order_id = n.client_order_id AND r.id <> n.id
            LIMIT 1"""),
    ],
    "fills": [
        ("fills_order_fkey", f"""
            SELECT n.id::text, n.order_id::text, r.id IS NULL, ARRAY[n.venue, n.market, n.side],
                   ARRAY[r.venue, r.market, r.side]
            FROM {_NEW} n LEFT JOIN agts.order_ids r ON r.id = n.order_id
            WHERE (n.venue, n.market, n.side) IS DISTINCT FROM (r.venue, r.market, r.side)
            ORDER BY r.id IS NOT NULL LIMIT 1"""),
        ("fills_after_order", f"""
            SELECT n.id::text, n.timestamp::text, r.id::text, r.timestamp::text
            FROM {_NEW} n JOIN agts.order_ids r ON r.id = n.order_id
            WHERE n.timestamp < r.timestamp ORDER BY n.timestamp LIMIT 1"""),
    ],
    "order_events": [
        ("order_events_order_id_fkey", f"""
            SELECT n.status, n.order_id::text FROM {_NEW} n
            WHERE NOT EXISTS (SELECT 1 FROM agts.order_ids r WHERE r.id = n.order_id) LIMIT 1"""),
        ("order_events_filled_size_within_order", f"""
            SELECT n.order_id::text, n.status, n.filled_size, r.size
            FROM {_NEW} n JOIN agts.order_ids r ON r.id = n.order_id
            WHERE n.filled_size - r.size > r.size * {_TOLERANCE} ORDER BY n.timestamp LIMIT 1"""),
        ("order_lifecycle", _render(sql.SQL("""
            SELECT n.order_id::text, n.status, n.timestamp::text, e.status, e.timestamp::text
            FROM {new} n JOIN LATERAL (
                SELECT a.status, a.timestamp FROM (
                    SELECT order_id, status, timestamp FROM agts.order_events
                    UNION ALL SELECT order_id, status, timestamp FROM {new}) a
                WHERE a.order_id = n.order_id AND a.status IN ({terminal})
                  AND a.timestamp <= n.timestamp
                  AND NOT (a.timestamp = n.timestamp AND a.status = n.status)
                ORDER BY a.timestamp LIMIT 1) e ON true
            LIMIT 1""").format(new=sql.Identifier(_NEW), terminal=_TERMINAL))),
    ],
}

_ORDER_INSERTS = [
    f"""INSERT INTO agts.order_ids (id, timestamp, client_order_id, venue, market, side, size)
        SELECT id, timestamp, client_order_id, venue, market, side, size FROM {_NEW}
        ON CONFLICT (id) DO NOTHING""",
]
# Fills: the insert adds what it stored to the orders' filled_size in the same statement, and the
# check after it finds an order whose fills now add up to more than its size (the transaction is
# then rolled back). Rows already stored are skipped by the insert, so a resend adds nothing.
_FILLS_INSERT = f"""
    WITH ins AS (
        INSERT INTO agts.fills (id, timestamp, order_id, venue, market, side, price, size, fee,
                                fee_currency)
        SELECT id, timestamp, order_id, venue, market, side, price, size, fee, fee_currency
        FROM {_NEW} ON CONFLICT (id, timestamp) DO NOTHING RETURNING order_id, size),
    added AS (SELECT order_id, sum(size) AS size FROM ins GROUP BY order_id),
    upd AS (UPDATE agts.order_ids r SET filled_size = r.filled_size + a.size FROM added a
            WHERE r.id = a.order_id RETURNING 1)
    SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)"""
_OVERFILL = ("fills_within_order_size", f"""
    SELECT r.id::text, r.filled_size, r.size FROM agts.order_ids r
    WHERE r.id IN (SELECT order_id FROM {_NEW}) AND r.filled_size - r.size > r.size * {_TOLERANCE}
    LIMIT 1""")
_ORDER_EVENTS_INSERT = f"""
    INSERT INTO agts.order_events (timestamp, order_id, status)
    SELECT timestamp, id, status FROM {_NEW} ON CONFLICT DO NOTHING"""


def _check_message(constraint: str, spec: TableSpec, row: tuple[Any, ...]) -> str:
    prefix = f"constraint {constraint!r} violated: "
    if constraint == "order_ids_client_order_id_key":
        return (prefix + f"client_order_id {row[0]!r} is used by order {row[2]!r}, "
                f"cannot store it for order {row[1]!r}")
    if constraint == "fills_order_fkey" and row[2]:
        return prefix + f"order_id {row[1]!r} of fill {row[0]!r} is not a stored order"
    if constraint == "fills_order_fkey":
        column, given, stored = next(
            (c, g, s) for c, g, s in zip(("venue", "market", "side"), row[3], row[4], strict=True)
            if g != s)
        return (prefix + f"{column} {given!r} of fill {row[0]!r} differs from its order's "
                f"{column} {stored!r}")
    if constraint == "order_events_order_id_fkey":
        return prefix + f"order_id {row[1]!r} of a {row[0]!r} event is not a stored order"
    if constraint == "fills_after_order":
        return (prefix + f"fill {row[0]!r} at {row[1]} is dated before its order {row[2]!r}, "
                f"placed at {row[3]}")
    if constraint == "order_events_filled_size_within_order":
        return (prefix + f"a {row[1]!r} event of order {row[0]!r} reports filled_size "
                f"{row[2]!r}, above the order's size {row[3]!r}")
    if constraint == "fills_within_order_size":
        return (prefix + f"the fills of order {row[0]!r} would add up to {row[1]!r}, above the "
                f"order's size {row[2]!r} (allowed: the size + {FILL_TOLERANCE:g} of it, for "
                "float rounding)")
    if constraint == "order_lifecycle":
        return (prefix + f"order {row[0]!r} is {row[3]!r} since {row[4]}; status {row[1]!r} at "
                f"{row[2]} cannot follow a final status")
    return prefix + repr(row)  # pragma: no cover - every check above has its message


def _conflict_message(spec: TableSpec, given: list[str | None], stored: list[str | None]) -> str:
    key = ", ".join(f"{k}={given[spec.names.index(k)]!r}" for k in spec.key)
    column, new, old = next(
        (c, g, s) for c, g, s in zip(spec.names, given, stored, strict=True) if g != s)
    return (f"{spec.noun} {key} is already stored with a different payload: {column} is "
            f"{old!r} stored, {new!r} given (constraint {spec.key_constraint!r})")


def write(db: Database, spec: TableSpec, table: pa.Table) -> int:
    """Store the checked rows of ``table``; return how many were new.

    Raises
    ------
    ConflictError, ConstraintError
        See the module docstring; nothing is written.
    StorageError
        The database refused the batch (translated driver error).
    """
    if table.num_rows == 0:
        return 0
    problem: StorageError | None = None
    inserted = 0
    with db.adbc(f"store {spec.kind}") as conn:
        with conn.cursor() as cur:
            cur.adbc_ingest(_STAGE, table, mode="replace", temporary=True)
            for statement in _jsonb_columns(spec):
                cur.execute(statement)
            cur.execute(_lock(spec))
            cur.fetchall()
            problem = _find_problem(cur, spec, single=table.num_rows == 1)
            if problem is None:
                inserted = _insert_all(cur, spec)
                problem = _check_after_insert(cur, spec)
            cur.execute(f"DROP TABLE {_STAGE}")
        if problem is None:
            conn.commit()
        else:
            conn.rollback()
    if problem is not None:
        raise problem
    log.debug("stored %d new of %d %s rows", inserted, table.num_rows, spec.kind)
    return inserted


def _find_problem(cur: Any, spec: TableSpec, *, single: bool) -> StorageError | None:
    row = None
    if not single:  # one staged row cannot conflict with itself
        cur.execute(_batch_conflict(spec))
        row = cur.fetchone()
    if row is not None:
        key = ", ".join(f"{k}={v!r}" for k, v in zip(spec.key, row[0], strict=True))
        return ConflictError(
            f"{spec.noun} {key} appears more than once in the batch with different payloads "
            f"(constraint {spec.key_constraint!r})", constraint=spec.key_constraint)
    cur.execute(_stored_conflict(spec))
    row = cur.fetchone()
    if row is not None:
        return ConflictError(_conflict_message(spec, row[0], row[1]),
                             constraint=spec.key_constraint)
    for constraint, query in _CHECKS.get(spec.kind, []):
        cur.execute(query)
        row = cur.fetchone()
        if row is not None:
            return ConstraintError(_check_message(constraint, spec, tuple(row)),
                                   constraint=constraint)
    return None


def _lock(spec: TableSpec) -> str:
    return _render(sql.SQL("SELECT name FROM agts.locks WHERE name = {} FOR UPDATE").format(
        sql.Literal(spec.lock)))


def _check_after_insert(cur: Any, spec: TableSpec) -> StorageError | None:
    if spec.kind != "fills":
        return None
    constraint, query = _OVERFILL
    cur.execute(query)
    row = cur.fetchone()
    if row is None:
        return None
    return ConstraintError(_check_message(constraint, spec, tuple(row)), constraint=constraint)


def _insert_all(cur: Any, spec: TableSpec) -> int:
    if spec.kind == "orders":
        for statement in _ORDER_INSERTS:
            cur.execute(statement)
    cur.execute(_FILLS_INSERT if spec.kind == "fills" else _insert(spec))
    row = cur.fetchone()
    inserted = int(row[0]) if row else 0
    if spec.kind == "orders":
        cur.execute(_ORDER_EVENTS_INSERT)
    return inserted
