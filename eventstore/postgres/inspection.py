"""Read-only inspection for the command line: streams by prefix, served by an index.

The streams table's primary key is ``stream_id``, a btree in the column's collation. A
prefix becomes the range ``prefix <= stream_id < next(prefix)``, which that index serves
when the collation orders by code point (``C``, ``POSIX``, ``C.UTF-8``, as in most
containers); under a linguistic collation (``en_US.UTF-8``) the range would not hold every
id with the prefix, so the query filters with ``starts_with`` instead, a scan of the table.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Final

import psycopg
from psycopg import sql

from eventstore._append import validate_schema
from eventstore.postgres.connections import libpq_url, probe
from eventstore.postgres.errors import translated_errors
from eventstore.postgres.schema import DEFAULT_SCHEMA

__all__ = ["StreamRow", "list_streams", "prefix_upper_bound", "stream_query"]

_CODE_POINT_COLLATIONS: Final = frozenset({"c", "posix", "c.utf8", "c.utf-8", "ucs_basic"})
_MAX_CODE_POINT: Final = 0x10FFFF


@dataclasses.dataclass(frozen=True, slots=True)
class StreamRow:
    """One stream as listed: its id, version (event count) and last write."""

    stream_id: str
    version: int
    updated_at: dt.datetime


def prefix_upper_bound(prefix: str) -> str | None:
    """Returns the least string above every string that starts with ``prefix`` (code points).

    ``None`` when there is none (an empty prefix, or one made of the highest code point).
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        for candidate in range(last + 1, _MAX_CODE_POINT + 1):
            if not 0xD800 <= candidate <= 0xDFFF:  # surrogates cannot be stored
                return "".join(chars) + chr(candidate)
    return None


def stream_query(
    schema: str, prefix: str, *, code_point_order: bool, after: str | None = None
) -> tuple[sql.Composed, list[object]]:
    """Returns the listing statement and its parameters (``limit`` comes last)."""
    table = sql.Identifier(validate_schema(schema), "streams")
    conditions: list[sql.Composable] = []
    params: list[object] = []
    if prefix and code_point_order:
        conditions.append(sql.SQL("stream_id >= %s"))
        params.append(prefix)
        upper = prefix_upper_bound(prefix)
        if upper is not None:
            conditions.append(sql.SQL("stream_id < %s"))
            params.append(upper)
    elif prefix:
        conditions.append(sql.SQL("starts_with(stream_id, %s)"))
        params.append(prefix)
    if after is not None:
        conditions.append(sql.SQL("stream_id > %s"))
        params.append(after)
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    statement = sql.SQL(
        "SELECT stream_id, version, updated_at FROM {}{} ORDER BY stream_id LIMIT %s"
    ).format(table, where)
    return statement, params


def _code_point_order(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> bool:
    row = conn.execute(
        "SELECT coalesce(nullif(co.collcollate, ''), d.datcollate), "
        "coalesce(co.collprovider, d.datlocprovider)::text "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation AND co.collname <> 'default' "
        "JOIN pg_database d ON d.datname = current_database() "
        "WHERE n.nspname = %s AND c.relname = 'streams' AND a.attname = 'stream_id'",
        [schema],
    ).fetchone()
    if row is None:
        return False
    collation, provider = str(row[0] or "").lower(), str(row[1])
    return provider == "c" and collation in _CODE_POINT_COLLATIONS


def list_streams(
    url: str,
    *,
    prefix: str = "",
    schema: str = DEFAULT_SCHEMA,
    limit: int = 100,
    after: str | None = None,
) -> list[StreamRow]:
    """Lists up to ``limit`` streams whose id starts with ``prefix``, in id order.

    ``after`` continues a listing after that stream id.
    """
    schema = validate_schema(schema)
    probe(url)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn, translated_errors():
        ordered = _code_point_order(conn, schema)
        statement, params = stream_query(schema, prefix, code_point_order=ordered, after=after)
        rows = conn.execute(statement, [*params, limit]).fetchall()
    return [StreamRow(str(r[0]), int(r[1]), r[2]) for r in rows]
