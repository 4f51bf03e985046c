"""The append statement on the store's own connections, through libpq's prepared calls.

psycopg's cursor layer (query conversion, parameter adaptation, prepared-statement
bookkeeping, result objects) costs about as much client CPU per single-event append as
everything else the store does, and with several writers on few cores client CPU is what
bounds appends (docs/discussions/append.md). The append's parameters are few and their
types fixed, so on its own pooled connections the store prepares the statement once per
connection under its own name and sends each append with ``send_query_prepared``: the
parameters encoded by hand (text, or a uuid's 16 bytes), the returned rows loaded from
binary by psycopg's transformer. Errors come back as the same psycopg exceptions, built
from the result by psycopg (`psycopg.errors.error_from_result`).

Only the append, and only on the store's own connections (idle, not in pipeline mode, used
by one operation at a time): a caller's connection keeps psycopg's cursor. A connection
whose ``prepare_threshold`` is None (a PgBouncer without prepared-statement support, say)
keeps the cursor too. Pure helpers: the sync and async stores do the I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

from psycopg import errors, pq
from psycopg.adapt import Transformer

_PLACEHOLDER: Final = re.compile(r"%\((\w+)\)([sb])")
# The Postgres type each append parameter is prepared with (pg_type oids). Ints travel as
# text and are read as bigint; the statements cast to the columns' types where they differ.
# JSON goes as "unknown" (0), like psycopg sends a str: the statement's `::jsonb` then
# parses it straight into jsonb instead of making a text value first and casting that.
_UNKNOWN: Final = 0
_TEXT: Final = 25
_INT8: Final = 20
_UUID: Final = 2950
_TYPES: Final = {
    "stream_id": _TEXT,
    "count": _INT8,
    "expected": _INT8,
    "shard_key": _INT8,
    "first_id": _UUID,
    "metadata": _UNKNOWN,
    "event_type": _TEXT,
    "schema_version": _INT8,
    "data": _UNKNOWN,
    "events": _UNKNOWN,
}
_TUPLES_OK: Final = int(pq.ExecStatus.TUPLES_OK)
_COMMAND_OK: Final = int(pq.ExecStatus.COMMAND_OK)
# The connection lost the statement (DEALLOCATE ALL, DISCARD ALL): prepare it again.
_NO_SUCH_STATEMENT: Final = "26000"
# The connection has it already (prepared before this state was made): use it.
_ALREADY_PREPARED: Final = "42P05"
STATE_ATTRIBUTE: Final = "_eventstore_prepared"


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """Holds one statement in positional form: its name, text, parameters and their types."""

    name: bytes
    query: bytes
    params: tuple[str, ...]
    # Lists, not tuples: psycopg 3.2's C `PGconn` takes only lists for these.
    types: list[int]
    formats: list[int]

    def values(self, params: Mapping[str, Any], encoding: str) -> list[bytes | None]:
        """Returns the parameters encoded as the prepared statement takes them."""
        values: list[bytes | None] = []
        for name in self.params:
            value = params[name]
            if value is None:
                values.append(None)
            elif type(value) is str:
                values.append(value.encode(encoding))
            elif type(value) is int:
                values.append(str(value).encode())
            elif isinstance(value, UUID):  # sent in binary: its 16 bytes
                values.append(value.bytes)
            else:
                raise TypeError(f"append parameter {name!r}: unexpected {type(value).__name__}")
        return values


def positional(statement: bytes) -> Prepared:
    """Turns a statement with ``%(name)s`` / ``%(name)b`` placeholders into ``$n`` form,
    named after its text (stores of other schemas may share a pool given with pool=)."""
    names: list[str] = []
    formats: list[int] = []

    def number(match: re.Match[str]) -> str:
        param = match.group(1)
        if param not in names:
            names.append(param)
            formats.append(1 if match.group(2) == "b" else 0)
        return f"${names.index(param) + 1}"

    query = _PLACEHOLDER.sub(number, statement.decode())
    digest = hashlib.sha1(statement, usedforsecurity=False).hexdigest()[:20]
    return Prepared(
        f"eventstore_{digest}".encode(),
        query.encode(),
        tuple(names),
        [_TYPES[n] for n in names],
        formats,
    )


@dataclasses.dataclass(slots=True)
class ConnectionState:
    """What one connection has prepared, its client encoding (looked up once) and the
    psycopg transformer that loads its results (in C, with its loaders cached)."""

    encoding: str
    transformer: Any  # psycopg's Transformer (C or Python): no public type to name
    prepared: set[bytes] = dataclasses.field(default_factory=set)

    def rows(self, result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
        """Loads every row of a binary result as tuples."""
        tx = self.transformer
        tx.set_pgresult(result, set_loaders=True, format=pq.Format.BINARY)
        rows: list[tuple[Any, ...]] = tx.load_rows(0, result.ntuples, tuple)
        return rows


def state_of(conn: Any) -> ConnectionState | None:
    """Returns the connection's state, made on first use; None if it must not prepare."""
    state: ConnectionState | None = getattr(conn, STATE_ATTRIBUTE, None)
    if state is None:
        if conn.prepare_threshold is None:  # the user turned prepared statements off
            return None
        state = ConnectionState(conn.info.encoding, Transformer(conn))
        setattr(conn, STATE_ATTRIBUTE, state)
    return state


def checked(results: Sequence[pq.abc.PGresult], encoding: str, ok: int = _TUPLES_OK) -> Any:
    """Returns the last result, raising psycopg's exception for an error result."""
    result = results[-1]
    if result.status != ok:
        raise errors.error_from_result(result, encoding=encoding)
    return result


def prepared_ok(results: Sequence[pq.abc.PGresult], encoding: str) -> None:
    """Raises psycopg's exception unless the statement is prepared now (or was already)."""
    try:
        checked(results, encoding, _COMMAND_OK)
    except errors.Error as exc:
        if exc.sqlstate != _ALREADY_PREPARED:
            raise


def lost_statement(exc: BaseException) -> bool:
    """Tells whether an error says the prepared statement no longer exists."""
    return getattr(exc, "sqlstate", None) == _NO_SUCH_STATEMENT
