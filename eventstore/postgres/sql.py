"""SQL statements of the event log, one constant per operation.

Table names are composed with `psycopg.sql.Identifier` for the configured schema, once per
store; values always travel as parameters.

Append is a single statement: its first CTE *claims* the versions on the stream row
(insert, or update conditional on the expected version), and only when that row comes back
does the second CTE insert the events. Writers to one stream therefore serialise on the
stream row before any `global_position` is drawn: a loser of a conflict burns no
position, and per-stream position order equals commit order.

Idempotent retries in a caller's transaction: the claim also refuses when the append's
first event id is already stored (one probe of the unique index). A retry repeats that id,
so it is refused and then explained by `REFUSED_APPEND`, without reaching the unique index:
a unique violation would abort the caller's whole transaction and burn the positions drawn.
Only an id reused in a later position reaches the index (DuplicateEventIdError either way;
in a caller's transaction that transaction is then aborted).

On the store's own connection a statement aborts nothing but itself, so the claims there
carry no guard (`append_own`): a retry whose claim succeeds meets the unique index, loses
that statement and is explained by `REFUSED_APPEND` in the same way. Without the guard the
server ran 7 % more single-event appends with 4 clients and 13-34 % more with 16
(docs/discussions/append.md).

The events travel as one JSON array of ``{"i": id, "t": type, "v": schema version,
"d": payload}``, joined on the client from the already encoded payloads and turned into
rows by ``jsonb_to_recordset`` on the server; the metadata, shared by all events of an
append, travels once. No array parameters: adapting them cost more client time than the
whole JSON join.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Final, Generic, TypeVar

from psycopg import sql

from eventstore.store import ANY, NO_STREAM, STREAM_EXISTS

S = TypeVar("S")
R = TypeVar("R")

# One probe of the unique index, on the append's first event id: a retry repeats it. (A
# probe for every id measured 2x slower on 100-event appends to a young table: the planner
# re-plans `= ANY(array)` each time and may scan; an equality on a unique index is stable.)
# `{where_guard}` / `{and_guard}` mark where it goes; the own connection's claims drop it.
_NO_DUPLICATES: Final = "NOT EXISTS (SELECT 1 FROM {events} WHERE event_id = %(first_id)b::uuid)"

CLAIM_ANY: Final = (
    "INSERT INTO {streams} AS s (stream_id, version) "
    "SELECT %(stream_id)s, %(count)s{where_guard} "
    "ON CONFLICT (stream_id) DO UPDATE "
    "SET version = s.version + EXCLUDED.version, updated_at = now() "
    "RETURNING s.version - %(count)s AS base"
)

CLAIM_NO_STREAM: Final = (
    "INSERT INTO {streams} AS s (stream_id, version) "
    "SELECT %(stream_id)s, %(count)s{where_guard} "
    "ON CONFLICT (stream_id) DO NOTHING "
    "RETURNING 0::bigint AS base"
)

CLAIM_EXACT: Final = (
    "UPDATE {streams} SET version = version + %(count)s, updated_at = now() "
    "WHERE stream_id = %(stream_id)s AND version = %(expected)s{and_guard} "
    "RETURNING version - %(count)s AS base"
)

CLAIM_STREAM_EXISTS: Final = (
    "UPDATE {streams} SET version = version + %(count)s, updated_at = now() "
    "WHERE stream_id = %(stream_id)s{and_guard} "
    "RETURNING version - %(count)s AS base"
)

# ORDER BY e.n makes identity values follow the events' order within the append.
_INSERT_EVENTS: Final = (
    "WITH claim AS ({claim}), ins AS ("
    "INSERT INTO {events} (stream_id, version, event_id, event_type, schema_version, "
    "shard_key, data, metadata) "
    "SELECT %(stream_id)s, claim.base + e.n, e.i, e.t, e.v, %(shard_key)s, e.d, "
    "%(metadata)s::jsonb "
    "FROM claim, ROWS FROM (jsonb_to_recordset(%(events)s::jsonb) "
    "AS (i uuid, t text, v int, d jsonb)) WITH ORDINALITY AS e(i, t, v, d, n) "
    "ORDER BY e.n "
    "RETURNING global_position, version, transaction_id) "
    "SELECT global_position, version, transaction_id::text::bigint FROM ins"
)

# One event, the common case: its columns travel as plain parameters (no JSON array to
# build on the client or to take apart on the server).
_INSERT_ONE: Final = (
    "WITH claim AS ({claim}) "
    "INSERT INTO {events} (stream_id, version, event_id, event_type, schema_version, "
    "shard_key, data, metadata) "
    "SELECT %(stream_id)s, claim.base + 1, %(first_id)b::uuid, %(event_type)s, "
    "%(schema_version)s, %(shard_key)s, %(data)s::jsonb, %(metadata)s::jsonb FROM claim "
    "RETURNING global_position, version, transaction_id::text::bigint"
)

STREAM_VERSION: Final = "SELECT version FROM {streams} WHERE stream_id = %(stream_id)s"

# Why a claim was refused, in one round trip: the stream's version (the row whose event id
# is NULL) and wherever any of the append's event ids is stored already, with whether the
# stored event has the same type, schema version and payload as the one sent now (a retry
# carrying other content under the same ids is a client bug, refused loudly). Only this
# refused path compares payloads: the fast path costs nothing more.
REFUSED_APPEND: Final = (
    "SELECT NULL::uuid, NULL::text, version, NULL::bigint, NULL::bigint, NULL::boolean "
    "FROM {streams} WHERE stream_id = %(stream_id)s UNION ALL "
    "SELECT e.event_id, e.stream_id, e.version, e.global_position, "
    "e.transaction_id::text::bigint, "
    "coalesce(e.event_type = p.t AND e.schema_version = p.v AND e.data = p.d, false) "
    "FROM {events} e LEFT JOIN jsonb_to_recordset(%(events)s::jsonb) "
    "AS p(i uuid, t text, v int, d jsonb) ON p.i = e.event_id "
    "WHERE e.event_id = ANY(%(event_ids)b::uuid[])"
)

_EVENT_COLUMNS: Final = (
    "SELECT global_position, stream_id, version, event_id, event_type, schema_version, "
    "data::text, metadata::text, recorded_at, transaction_id::text::bigint FROM {events} "
)

READ_FORWARD: Final = (
    _EVENT_COLUMNS + "WHERE stream_id = %(stream_id)s AND version >= %(version)s "
    "ORDER BY version LIMIT %(limit)s"
)

READ_BACKWARD: Final = (
    _EVENT_COLUMNS + "WHERE stream_id = %(stream_id)s AND version <= %(version)s "
    "ORDER BY version DESC LIMIT %(limit)s"
)
APPEND_NEIGHBOURS: Final = (
    "SELECT 1 FROM {events} WHERE stream_id = %(stream_id)s "
    "AND version IN (%(before)s, %(after)s) AND transaction_id::text::bigint = %(xid)s"
)

# The lean read of aggregates and deciders: only what rebuilding state needs.
READ_DATA_FORWARD: Final = (
    "SELECT version, event_type, schema_version, data::text FROM {events} "
    "WHERE stream_id = %(stream_id)s AND version >= %(version)s ORDER BY version LIMIT %(limit)s"
)

# A snapshot only ever moves forward: an older one never overwrites a newer one, unless
# the stored one no longer matches the log (the event at its version is gone or another).
SAVE_SNAPSHOT: Final = (
    "INSERT INTO {snapshots} AS s "
    "(stream_id, version, state_type, schema_version, state, event_id) "
    "VALUES (%(stream_id)s, %(version)s, %(state_type)s, %(schema_version)s, "
    "%(state)s::jsonb, %(event_id)s) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, "
    "state_type = EXCLUDED.state_type, schema_version = EXCLUDED.schema_version, "
    "state = EXCLUDED.state, event_id = EXCLUDED.event_id, recorded_at = now() "
    "WHERE s.version < EXCLUDED.version OR NOT EXISTS (SELECT FROM {events} e "
    "WHERE e.stream_id = s.stream_id AND e.version = s.version AND e.event_id = s.event_id)"
)

# Only a snapshot bound to the event now at its version is handed out (one index probe).
LOAD_SNAPSHOT: Final = (
    "SELECT s.stream_id, s.version, s.state_type, s.schema_version, s.state::text, "
    "s.event_id FROM {snapshots} s JOIN {events} e ON e.stream_id = s.stream_id "
    "AND e.version = s.version AND e.event_id = s.event_id "
    "WHERE s.stream_id = %(stream_id)s"
)

DELETE_SNAPSHOT: Final = "DELETE FROM {snapshots} WHERE stream_id = %(stream_id)s"

# The serialising mode of the repositories: a transaction-scoped advisory lock whose 64-bit
# key hashes the schema and the stream id on the server (`hashtextextended`, Postgres 11+).
# Two streams whose keys collide (or another application's lock on the same key) only
# queue behind each other: a collision costs waiting, never correctness, because appends
# still check the expected version. No row is locked and nothing is written.
LOCK_STREAM: Final = (
    "SELECT pg_advisory_xact_lock(hashtextextended({schema_name} || '/' || %(stream_id)s, 0))"
)


@dataclasses.dataclass(frozen=True, slots=True)
class AppendStatements(Generic[S]):
    """Holds the eight append statements: four claims, for one event or many."""

    any: S
    no_stream: S
    exact: S
    stream_exists: S
    one_any: S
    one_no_stream: S
    one_exact: S
    one_stream_exists: S

    def map(self, convert: Callable[[S], R]) -> AppendStatements[R]:
        """Returns the eight statements converted."""
        return AppendStatements(*[convert(getattr(self, f.name)) for f in dataclasses.fields(self)])

    def pick(self, expected: object, one: bool) -> S:
        """Returns the statement for an expected version and one event or many."""
        if expected is ANY:
            return self.one_any if one else self.any
        if expected is NO_STREAM:
            return self.one_no_stream if one else self.no_stream
        if expected is STREAM_EXISTS:
            return self.one_stream_exists if one else self.stream_exists
        return self.one_exact if one else self.exact


@dataclasses.dataclass(frozen=True, slots=True)
class Statements:
    """Holds every statement rendered for one schema, as bytes ready to execute."""

    append: AppendStatements[bytes]  # guarded: for a caller's connection
    append_own: AppendStatements[bytes]  # unguarded: for the store's own connection
    stream_version: bytes
    refused_append: bytes
    append_neighbours: bytes
    read_forward: bytes
    read_backward: bytes
    read_data_forward: bytes
    save_snapshot: bytes
    load_snapshot: bytes
    delete_snapshot: bytes
    lock_stream: bytes


def _claim(template: str, *, guarded: bool) -> str:
    guard = _NO_DUPLICATES if guarded else None
    return template.replace("{where_guard}", f" WHERE {guard}" if guard else "").replace(
        "{and_guard}", f" AND {guard}" if guard else ""
    )


def render(schema: str) -> Statements:
    """Renders all statements for a schema, quoting its name as an identifier."""
    names = {
        "streams": sql.Identifier(schema, "streams"),
        "events": sql.Identifier(schema, "events"),
        "snapshots": sql.Identifier(schema, "snapshots"),
        "schema_name": sql.Literal(schema),
    }

    def build(template: str) -> bytes:
        return sql.SQL(template).format(**names).as_bytes(None)

    def appends(*, guarded: bool) -> AppendStatements[bytes]:
        claims = [
            _claim(c, guarded=guarded)
            for c in (CLAIM_ANY, CLAIM_NO_STREAM, CLAIM_EXACT, CLAIM_STREAM_EXISTS)
        ]
        many = [build(_INSERT_EVENTS.replace("{claim}", c)) for c in claims]
        one = [build(_INSERT_ONE.replace("{claim}", c)) for c in claims]
        return AppendStatements(*many, *one)

    return Statements(
        append=appends(guarded=True),
        append_own=appends(guarded=False),
        stream_version=build(STREAM_VERSION),
        refused_append=build(REFUSED_APPEND),
        append_neighbours=build(APPEND_NEIGHBOURS),
        read_forward=build(READ_FORWARD),
        read_backward=build(READ_BACKWARD),
        read_data_forward=build(READ_DATA_FORWARD),
        save_snapshot=build(SAVE_SNAPSHOT),
        load_snapshot=build(LOAD_SNAPSHOT),
        delete_snapshot=build(DELETE_SNAPSHOT),
        lock_stream=build(LOCK_STREAM),
    )
