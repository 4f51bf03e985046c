# Generated from store_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
# ruff: noqa: UP028
"""The Postgres event store: appends and reads in its own transactions or the caller's.

`store_async.py` is the source and `store.py` its generated sync twin (see
`tools/async_to_sync.py`). All decisions live in the pure modules (`eventstore._append`,
`eventstore._rows`); this shell only moves bytes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, Final, NamedTuple, Self, TypeVar, overload
from uuid import UUID

import psycopg
import psycopg_pool
import pydantic
import tenacity
from psycopg import generators
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from eventstore import _append, _rows
from eventstore._acompat import Lock
from eventstore._append import AppendPlan
from eventstore.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DuplicateEventIdError,
    TransactionConflictError,
)
from eventstore.events import Event, EventMetadata, RawRecordedEvent, RecordedEvent
from eventstore.postgres import prepared as _prepared
from eventstore.postgres import sql as _sql
from eventstore.postgres.connections import (
    connection_error,
    is_transient_connect_error,
    libpq_url,
    unwrap_connection,
)
from eventstore.postgres.errors import translated as _translated
from eventstore.postgres.errors import translated_errors
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.scope import entered
from eventstore.registry import EventRegistry
from eventstore.settings import database_url_from_env
from eventstore.store import (
    ANY,
    AppendResult,
    ConnectionLike,
    Direction,
    ExpectedVersion,
    Snapshot,
    StreamInfo,
)

__all__ = ["PostgresEventStore"]

_IDLE: Final = int(TransactionStatus.IDLE)
_CURSOR_ATTRIBUTE: Final = "_eventstore_cursor"
# Set on a connection while `command_transaction` runs: its first append also commits.
_COMMIT_WITH_APPEND: Final = "_eventstore_commit_with_append"
_OPEN: Final = (int(TransactionStatus.INTRANS), int(TransactionStatus.INERROR))

E = TypeVar("E", bound=Event)
T = TypeVar("T")


class PostgresEventStore:
    """Appends and reads events in Postgres, in its own transactions or the caller's.

    Every method that touches the database takes an optional ``conn``: a psycopg
    connection, a SQLAlchemy connection or a session. With one, the statements run inside
    the caller's transaction, which the caller commits or rolls back. Without one, the store
    takes a connection from its pool; a single append is then one statement in autocommit
    mode, which is one atomic round trip.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        registry: EventRegistry,
        schema: str = DEFAULT_SCHEMA,
        pool: psycopg_pool.ConnectionPool[Any] | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        page_size: int = 1000,
        reconnect_attempts: int = 4,
    ) -> None:
        if page_size < 1:
            raise ConfigurationError("page_size must be >= 1")
        if pool is None:
            url = url or database_url_from_env()
            if url is None:
                raise ConfigurationError(
                    "no database configured: pass a URL or set EVENTSTORE_DATABASE_URL"
                )
            url = libpq_url(url)
        self._url = url
        self._registry = registry
        self._statements = _sql.render(_append.validate_schema(schema))
        self._prepared = self._statements.append_own.map(_prepared.positional)
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_sizes = (min_size, max_size)
        self._connect_timeout = connect_timeout
        self._page_size = page_size
        self._reconnect_attempts = max(1, reconnect_attempts)
        self._lock = Lock()

    @property
    def registry(self) -> EventRegistry:
        """Returns the registry that encodes and decodes this store's events."""
        return self._registry

    def open(self) -> None:
        """Opens the connection pool, waiting for a first connection; idempotent."""
        self._ensure_pool()

    def close(self) -> None:
        """Closes the connection pool if the store created it."""
        if self._pool is not None and self._owns_pool:
            pool, self._pool = self._pool, None
            pool.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _ensure_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        if self._pool is not None:
            return self._pool
        with self._lock:
            if self._pool is None:
                self._pool = self._open_pool()
        return self._pool

    def _open_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        min_size, max_size = self._pool_sizes
        if self._url is None:
            raise ConfigurationError("this store was given a pool, which has been closed")
        # One connection first: a wrong URL (no such database or role, a refused password)
        # fails at once, named; a server still starting gets the pool's wait, and a
        # timeout then names what the first attempt met instead of "no connection in time".
        failure: DatabaseUnavailableError | None = None
        try:
            first = psycopg.Connection.connect(
                self._url, connect_timeout=max(1, math.ceil(self._connect_timeout))
            )
        except psycopg.OperationalError as exc:
            failure = connection_error(self._url, exc)
            if not is_transient_connect_error(exc):
                raise failure from exc
        else:
            first.close()
        pool = psycopg_pool.ConnectionPool(
            self._url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=self._connect_timeout,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, math.ceil(self._connect_timeout)),
            },
        )
        try:
            with translated_errors():
                pool.open(wait=True, timeout=self._connect_timeout)
        except BaseException as exc:
            pool.close()
            if failure is not None and isinstance(exc, DatabaseUnavailableError):
                raise failure from exc
            raise
        return pool

    def _on_own_connection(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Runs an idempotent operation on a pooled connection, retrying on connection loss.

        After a Postgres restart every idle pooled connection is dead; checking the pool
        between attempts discards them instead of failing once per stale connection.
        """
        pool = self._ensure_pool()
        try:  # the common case, without building a retry loop
            return self._attempt(pool, operation)
        except (DatabaseUnavailableError, TransactionConflictError):
            # A conflict can only come from a server whose default isolation is above
            # read committed; the operation is a single idempotent statement, so retry.
            if self._reconnect_attempts == 1:
                raise
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(
                (DatabaseUnavailableError, TransactionConflictError)
            ),
            stop=tenacity.stop_after_attempt(self._reconnect_attempts - 1),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                return self._attempt(pool, operation)
        raise AssertionError("unreachable: tenacity reraises the last error")

    def _attempt(
        self,
        pool: psycopg_pool.ConnectionPool[Any],
        operation: Callable[[psycopg.Connection[Any]], T],
    ) -> T:
        # getconn/putconn instead of `pool.connection()`: the same commit or rollback, for
        # a fraction of the client time on the hottest path (docs/discussions/append.md).
        try:
            own = pool.getconn()
        except psycopg.Error as exc:  # PoolTimeout, PoolClosed
            raise _translated(exc) from exc
        try:
            try:
                result = operation(own)
                # pgconn's int, not `info`'s: that builds an object and an enum per call.
                if own.pgconn.transaction_status != _IDLE:
                    own.commit()  # a pool given with pool=, not in autocommit
                return result
            except BaseException:
                if own.pgconn.transaction_status in _OPEN:
                    _rollback_quietly(own)
                raise
            finally:
                pool.putconn(own)
        except psycopg.Error as exc:  # from commit: the operation translates its own
            failure = _translated(exc)
            if isinstance(failure, DatabaseUnavailableError):
                pool.check()
            if failure is exc:
                raise
            raise failure from exc
        except DatabaseUnavailableError:
            pool.check()
            raise

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """Yields a pooled connection inside a transaction that commits on success.

        Pass it as ``conn`` to append to several streams atomically; the transaction rolls
        back when the block raises.
        """
        pool = self._ensure_pool()
        with entered(pool.connection()) as own, entered(own.transaction()):
            yield own

    @contextmanager
    def command_transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """Yields a pooled connection inside a transaction for one command, pipelined.

        The repositories' serialising mode runs in it. Statements travel in pipeline mode,
        so those whose results nobody waits for ride with the next one: ``BEGIN`` with the
        first read, `lock_stream` with the catch-up read after it. The first `append`
        commits the transaction, its ``COMMIT`` sent in the same round trip, so the
        stream's lock is held for one round trip after the catch-up read instead of three;
        statements after that append run outside the transaction (in autocommit). Without
        an append the transaction commits when the block ends; it rolls back when the
        block raises.
        """
        pool = self._ensure_pool()
        with entered(pool.connection()) as own, entered(own.pipeline()):
            if own.autocommit:  # else psycopg opens the transaction itself
                with translated_errors():
                    own.execute(b"BEGIN")  # queued: it travels with the first read
            setattr(own, _COMMIT_WITH_APPEND, True)
            try:
                yield own
            except BaseException:
                with translated_errors():  # a failing ROLLBACK is the driver's error
                    own.rollback()
                raise
            else:
                with translated_errors():
                    own.commit()  # no append committed it: nothing happens if one did
            finally:
                setattr(own, _COMMIT_WITH_APPEND, False)

    def _fetch(
        self,
        conn: psycopg.Connection[Any],
        query: bytes,
        params: Mapping[str, Any],
        rows: bool = True,
        binary: bool = False,
        own: bool = False,
        commit: bool = False,
    ) -> list[tuple[Any, ...]]:
        try:
            if own:  # a pooled connection, used by this operation alone
                cur = _own_cursor(conn)
                cur.execute(query, params, binary=binary)
                return cur.fetchall() if rows else []
            # The caller's connection may have another row factory (dict_row, ...), and
            # other tasks may use it at the same time: a cursor of our own, each time.
            with conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(query, params, binary=binary)
                if commit:  # in pipeline mode: the COMMIT leaves with the statement
                    setattr(conn, _COMMIT_WITH_APPEND, False)
                    conn.commit()
                return cur.fetchall() if rows else []
        except psycopg.Error as exc:
            failure = _translated(exc, params.get("stream_id"))
            if failure is exc:
                raise
            raise failure from exc

    def _query(
        self,
        conn: ConnectionLike | None,
        query: bytes,
        params: Mapping[str, Any],
        *,
        rows: bool = True,
    ) -> list[tuple[Any, ...]]:
        if conn is not None:
            return self._fetch(unwrap_connection(conn), query, params, rows)
        return self._on_own_connection(lambda c: self._fetch(c, query, params, rows, own=True))

    def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ANY,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: ConnectionLike | None = None,
    ) -> AppendResult:
        """Appends events to a stream if it is at ``expected_version``.

        Raises `WrongExpectedVersionError` on a conflict. Appending the same event ids at
        the same place again returns the original result (``repeated=True``).
        """
        plan = _append.plan_append(
            self._registry, stream_id, events, expected_version, metadata, event_ids
        )
        if conn is not None:
            return self._append_on(unwrap_connection(conn), plan, own=False)
        # Retrying on our own connection is safe even when a lost reply hides a commit: the
        # retry carries the same event ids, so it returns the original result.
        return self._on_own_connection(lambda c: self._append_on(c, plan, own=True))

    def _append_on(
        self, conn: psycopg.Connection[Any], plan: AppendPlan, *, own: bool
    ) -> AppendResult:
        # In a `command_transaction`, the first append commits it in the same round trip.
        commit = not own and getattr(conn, _COMMIT_WITH_APPEND, False)
        try:
            state = _prepared.state_of(conn) if own else None
            if state is not None:
                rows = self._append_prepared(conn, plan, state)
            else:
                # On our own connection a unique violation costs only this statement, so
                # its claims carry no duplicate-id guard; a caller's keep it.
                statements = self._statements.append_own if own else self._statements.append
                # Binary results: three bigints load for half the client time of text.
                rows = self._fetch(
                    conn,
                    statements.pick(plan.expected, len(plan.events) == 1),
                    plan.params(),
                    binary=True,
                    own=own,
                    commit=commit,
                )
        except DuplicateEventIdError as exc:
            # The ids are stored already: by a concurrent retry that won the race, or
            # elsewhere. In a caller's transaction the transaction is aborted, so the
            # caller must retry it. On our own connection nothing of ours was written:
            # look at what is stored to return the original result or raise.
            idle = conn.info.transaction_status == TransactionStatus.IDLE
            if not own and not idle:
                raise DuplicateEventIdError(plan.stream_id, list(plan.event_ids)) from exc
            if not idle:  # our own connection from a pool not in autocommit
                conn.rollback()
            rows = []
        if rows:
            return _append.result_from_rows(plan, rows)
        return self._resolve_refused(conn, plan, own=own)

    def _append_prepared(
        self,
        conn: psycopg.Connection[Any],
        plan: AppendPlan,
        state: _prepared.ConnectionState,
    ) -> list[tuple[Any, ...]]:
        """Runs the append on our own connection as a statement prepared under our name."""
        statement = self._prepared.pick(plan.expected, len(plan.events) == 1)
        encoding = state.encoding
        values = statement.values(plan.params(), encoding)
        pg = conn.pgconn
        try:
            for retry in (False, True):
                if statement.name not in state.prepared:
                    pg.send_prepare(statement.name, statement.query, statement.types)
                    _prepared.prepared_ok(conn.wait(generators.execute(pg)), encoding)
                    state.prepared.add(statement.name)
                pg.send_query_prepared(statement.name, values, statement.formats, 1)
                try:
                    result = _prepared.checked(conn.wait(generators.execute(pg)), encoding)
                except psycopg.Error as exc:
                    if retry or not _prepared.lost_statement(exc):
                        raise
                    state.prepared.discard(statement.name)  # DISCARD ALL, say: again
                    continue
                return state.rows(result)
        except psycopg.Error as exc:
            failure = _translated(exc, plan.stream_id)
            if failure is exc:
                raise
            raise failure from exc
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _resolve_refused(
        self, conn: psycopg.Connection[Any], plan: AppendPlan, *, own: bool
    ) -> AppendResult:
        params = {
            "stream_id": plan.stream_id,
            "event_ids": list(plan.event_ids),
            "events": plan.wire(),
        }
        rows = self._fetch(conn, self._statements.refused_append, params, own=own)
        actual = next((row[2] for row in rows if row[0] is None), None)
        found = [row for row in rows if row[0] is not None]
        repeat = _append.resolve_refused_append(plan, actual, found)
        # The ids are all there, in order: it is a repeat only if that transaction wrote
        # nothing else right before or after them in this stream (a retry of part of an
        # append, or of several appends at once, is not the same append).
        neighbours = {
            "stream_id": plan.stream_id,
            "before": repeat.first_version - 1,
            "after": repeat.last_version + 1,
            "xid": repeat.transaction_id,
        }
        if self._fetch(conn, self._statements.append_neighbours, neighbours, own=own):
            raise DuplicateEventIdError(plan.stream_id, list(plan.event_ids))
        return repeat

    def stream_info(self, stream_id: str, *, conn: ConnectionLike | None = None) -> StreamInfo:
        """Returns whether a stream exists and its current version."""
        stream_id = _append.validate_stream_id(stream_id)
        rows = self._query(conn, self._statements.stream_version, {"stream_id": stream_id})
        if not rows:
            return StreamInfo(stream_id, exists=False, version=0)
        return StreamInfo(stream_id, exists=True, version=rows[0][0])

    def save_snapshot(self, snapshot: Snapshot, *, conn: ConnectionLike | None = None) -> None:
        """Stores a snapshot unless a newer one for the stream is already stored."""
        snapshot = _append.validate_snapshot(snapshot)
        self._query(conn, self._statements.save_snapshot, snapshot.params(), rows=False)

    def load_snapshot(
        self, stream_id: str, *, conn: ConnectionLike | None = None
    ) -> Snapshot | None:
        """Returns the stream's latest snapshot, or None."""
        params = {"stream_id": _append.validate_stream_id(stream_id)}
        rows = self._query(conn, self._statements.load_snapshot, params)
        return Snapshot(*rows[0]) if rows else None

    def delete_snapshot(self, stream_id: str, *, conn: ConnectionLike | None = None) -> None:
        """Removes the stream's snapshot; loading then replays the whole stream."""
        params = {"stream_id": _append.validate_stream_id(stream_id)}
        self._query(conn, self._statements.delete_snapshot, params, rows=False)

    @overload
    def read_stream(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: ConnectionLike | None = None,
        of_type: None = None,
    ) -> Iterator[RecordedEvent[Event]]: ...

    @overload
    def read_stream(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: ConnectionLike | None = None,
        of_type: type[E],
    ) -> Iterator[RecordedEvent[E]]: ...

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: ConnectionLike | None = None,
        of_type: type[Event] | None = None,
    ) -> Iterator[RecordedEvent[Any]]:
        """Yields a stream's events as typed, current-version events, page by page.

        Memory stays constant however long the stream is. ``from_version`` is inclusive;
        backward reads start at the end unless it is given. Arguments are checked at the
        call, rows are fetched as the iteration goes.

        ``of_type=Deposited`` narrows the events' type to ``RecordedEvent[Deposited]``, for
        streams that hold one class only (or its subclasses). It is checked, not filtered:
        an event of another class raises `InvalidEventError` (its ``event`` is the decoded
        `RecordedEvent`) when the iteration reaches it, and ends the iteration.
        """
        of_type = _rows.check_event_class(of_type)
        rows = self._read_rows(_ReadBounds.check(stream_id, direction, from_version, limit), conn)
        return self._decoded(rows, of_type)

    def _decoded(
        self, rows: Iterator[tuple[Any, ...]], of_type: type[Event] | None
    ) -> Iterator[RecordedEvent[Event]]:
        for row in rows:
            yield _rows.decode_row(self._registry, row, of_type)

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> Iterator[RawRecordedEvent]:
        """Yields a stream's events as stored, payloads as dicts, without the registry."""
        rows = self._read_rows(_ReadBounds.check(stream_id, direction, from_version, limit), conn)
        return self._raw(rows)

    def read_stream_data(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> Iterator[tuple[int, Event]]:
        """Yields ``(version, typed event)`` pairs: the lean read that rebuilds aggregates.

        It fetches only the columns state needs (no ids, times or metadata).
        """
        bounds = _ReadBounds.check(stream_id, "forward", from_version, None)
        return self._data(self._read_pages(bounds, conn, lean=True))

    def _data(self, pages: Iterator[list[tuple[Any, ...]]]) -> Iterator[tuple[int, Event]]:
        # Every load decodes every event here: an event stored at its class's current
        # version is validated straight from its JSON; anything else (an old version, an
        # unknown type, a payload that fails to validate) goes through `decode`, which
        # upcasts it or raises the typed error.
        decode = self._registry.decode
        classes = self._registry.current_classes()
        for page in pages:
            for version, event_type, schema_version, data in page:
                known = classes.get(event_type)
                if known is not None and known[0] == schema_version:
                    try:
                        event = known[1].__pydantic_validator__.validate_json(data)
                    except pydantic.ValidationError:
                        event = decode(event_type, schema_version, data)
                else:
                    event = decode(event_type, schema_version, data)
                yield version, event

    def _raw(self, rows: Iterator[tuple[Any, ...]]) -> Iterator[RawRecordedEvent]:
        for row in rows:
            yield _rows.decode_raw_row(row)

    def _read_rows(
        self, bounds: _ReadBounds, conn: ConnectionLike | None
    ) -> Iterator[tuple[Any, ...]]:
        for page in self._read_pages(bounds, conn):
            for row in page:
                yield row

    def _read_pages(
        self, bounds: _ReadBounds, conn: ConnectionLike | None, *, lean: bool = False
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Yields a stream's rows a page at a time (a generator step per row costs as much
        as decoding a small event)."""
        stream_id, forward, version, remaining = bounds
        query = self._statements.read_forward if forward else self._statements.read_backward
        if lean:
            query = self._statements.read_data_forward
        at = 0 if lean else 2  # where the version column is
        while remaining is None or remaining > 0:
            page = self._page_size if remaining is None else min(remaining, self._page_size)
            # One row more than the page tells whether another page follows, so a stream
            # that ends exactly at a page boundary costs no empty extra query.
            params = {"stream_id": stream_id, "version": version, "limit": page + 1}
            # A connection per page: a slow consumer never holds a pooled connection.
            rows = self._query(conn, query, params)
            if len(rows) <= page:
                if rows:
                    yield rows
                return
            yield rows[:page]
            version = rows[page][at]
            if remaining is not None:
                remaining -= page

    def lock_stream(self, stream_id: str, *, conn: ConnectionLike | None = None) -> None:
        """Waits for the stream's lock and holds it until the transaction of ``conn`` ends.

        Writers that take it before loading queue instead of conflicting: the serialising
        mode of the repositories. It is a transaction-scoped advisory lock on a 64-bit hash
        of the schema and stream id (a collision only makes two streams queue together).
        On a connection in pipeline mode (`command_transaction`) it returns once sent: the
        next statement's result comes after the lock is granted, in the same round trip.
        """
        if conn is None:
            raise ConfigurationError(
                "lock_stream needs conn=: the lock lasts until that transaction ends"
            )
        params = {"stream_id": _append.validate_stream_id(stream_id)}
        self._query(conn, self._statements.lock_stream, params, rows=False)


class _ReadBounds(NamedTuple):
    stream_id: str
    forward: bool
    version: int
    remaining: int | None

    @classmethod
    def check(
        cls, stream_id: str, direction: str, from_version: int | None, limit: int | None
    ) -> _ReadBounds:
        """Validates read arguments before any I/O."""
        forward, version, remaining = _rows.read_bounds(direction, from_version, limit)
        return cls(_append.validate_stream_id(stream_id), forward, version, remaining)


def _rollback_quietly(conn: psycopg.Connection[Any]) -> None:
    """Rolls back an own connection's open transaction; a broken one the pool discards."""
    with suppress(psycopg.Error):
        conn.rollback()


def _own_cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """Returns the cursor kept on one of the store's pooled connections, made once.

    A new cursor per statement starts with empty adaptation caches: reusing one halves the
    client instructions of the statement (docs/discussions/append.md). Only for pooled
    connections, which one operation uses at a time; the cycle with its connection is
    collected with it.
    """
    cur: psycopg.Cursor[Any] | None = getattr(conn, _CURSOR_ATTRIBUTE, None)
    if cur is None or cur.closed:
        cur = conn.cursor(row_factory=tuple_row)
        setattr(conn, _CURSOR_ATTRIBUTE, cur)
    return cur
