"""The Postgres event store for threaded and plain synchronous code.

GENERATED from `eventstore/async_store.py` by `tools/async_to_sync.py`: do not edit;
change the async module and regenerate.

All decisions live in `eventstore._core`; this shell only moves bytes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, TypeVar
from uuid import UUID

import psycopg
import psycopg_pool
import tenacity

from eventstore import _core, _sql
from eventstore._connections import (
    SyncConnectionLike,
    libpq_url,
    translated_errors,
    unwrap_connection,
)
from eventstore._core import ANY, AppendPlan, AppendResult, StreamInfo
from eventstore.errors import ConfigurationError, DatabaseUnavailableError, DuplicateEventIdError
from eventstore.events import Event, EventMetadata, EventRegistry, RawRecordedEvent, RecordedEvent
from eventstore.schema import DEFAULT_SCHEMA
from eventstore.settings import database_url_from_env

__all__ = ["PostgresEventStore"]

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
        self._statements = _sql.render(schema)
        self._pool = pool
        self._owns_pool = pool is None
        self._pool_sizes = (min_size, max_size)
        self._connect_timeout = connect_timeout
        self._page_size = page_size
        self._reconnect_attempts = max(1, reconnect_attempts)
        self._lock = threading.Lock()

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
        except BaseException:
            pool.close()
            raise
        return pool

    def _on_own_connection(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Runs an idempotent operation on a pooled connection, retrying on connection loss.

        After a Postgres restart every idle pooled connection is dead; checking the pool
        between attempts discards them instead of failing once per stale connection.
        """
        pool = self._ensure_pool()
        for attempt in tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(DatabaseUnavailableError),
            stop=tenacity.stop_after_attempt(self._reconnect_attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                try:
                    with translated_errors():
                        with pool.connection() as own:
                            return operation(own)
                except DatabaseUnavailableError:
                    pool.check()
                    raise
        raise AssertionError("unreachable: tenacity reraises the last error")

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """Yields a pooled connection inside a transaction that commits on success.

        Pass it as ``conn`` to append to several streams atomically.
        """
        pool = self._ensure_pool()
        with translated_errors():
            with pool.connection() as own, own.transaction():
                yield own

    def _fetch(
        self, conn: psycopg.Connection[Any], query: bytes, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        with translated_errors(params.get("stream_id")):
            cur = conn.execute(query, params)
            return cur.fetchall()

    def _query(
        self, conn: SyncConnectionLike | None, query: bytes, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        if conn is not None:
            return self._fetch(unwrap_connection(conn), query, params)
        return self._on_own_connection(lambda c: self._fetch(c, query, params))

    def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: _core.ExpectedVersion = ANY,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: SyncConnectionLike | None = None,
    ) -> AppendResult:
        """Appends events to a stream if it is at ``expected_version``.

        Raises `WrongExpectedVersionError` on a conflict. Appending the same event ids at
        the same place again returns the original result (``repeated=True``).
        """
        plan = _core.plan_append(
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
        try:
            rows = self._fetch(conn, self._append_statement(plan), plan.params())
        except DuplicateEventIdError:
            # A concurrent append of the same ids won the race. In autocommit nothing of
            # ours was written and the connection is usable; in a caller's transaction
            # the transaction is aborted, so the caller must retry it.
            if not own:
                raise
            rows = []
        if rows:
            return _core.result_from_rows(plan, rows)
        return self._resolve_refused(conn, plan)

    def _append_statement(self, plan: AppendPlan) -> bytes:
        s = self._statements
        if plan.expected is _core.ANY:
            return s.append_any
        if plan.expected is _core.NO_STREAM:
            return s.append_no_stream
        if plan.expected is _core.STREAM_EXISTS:
            return s.append_stream_exists
        return s.append_exact

    def _resolve_refused(self, conn: psycopg.Connection[Any], plan: AppendPlan) -> AppendResult:
        params = {"stream_id": plan.stream_id, "event_ids": list(plan.event_ids)}
        found = self._fetch(conn, self._statements.find_event_ids, params)
        version = self._fetch(conn, self._statements.stream_version, params)
        actual = version[0][0] if version else None
        return _core.resolve_refused_append(plan, actual, found)

    def stream_info(self, stream_id: str, *, conn: SyncConnectionLike | None = None) -> StreamInfo:
        """Returns whether a stream exists and its current version."""
        stream_id = _core.validate_stream_id(stream_id)
        rows = self._query(conn, self._statements.stream_version, {"stream_id": stream_id})
        if not rows:
            return StreamInfo(stream_id, exists=False, version=0)
        return StreamInfo(stream_id, exists=True, version=rows[0][0])

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: SyncConnectionLike | None = None,
    ) -> Iterator[RecordedEvent[Event]]:
        """Yields a stream's events as typed, current-version events, page by page.

        Memory stays constant however long the stream is. ``from_version`` is inclusive;
        backward reads start at the end unless it is given.
        """
        for row in self._read_rows(stream_id, direction, from_version, limit, conn):
            yield _core.decode_row(self._registry, row)

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: SyncConnectionLike | None = None,
    ) -> Iterator[RawRecordedEvent]:
        """Yields a stream's events as stored, payloads as dicts, without the registry."""
        for row in self._read_rows(stream_id, direction, from_version, limit, conn):
            yield _core.decode_raw_row(row)

    def _read_rows(
        self,
        stream_id: str,
        direction: str,
        from_version: int | None,
        limit: int | None,
        conn: SyncConnectionLike | None,
    ) -> Iterator[tuple[Any, ...]]:
        stream_id = _core.validate_stream_id(stream_id)
        forward, version, remaining = _core.read_bounds(direction, from_version, limit)
        query = self._statements.read_forward if forward else self._statements.read_backward
        while remaining is None or remaining > 0:
            page = self._page_size if remaining is None else min(remaining, self._page_size)
            params = {"stream_id": stream_id, "version": version, "limit": page}
            # A connection per page: a slow consumer never holds a pooled connection.
            rows = self._query(conn, query, params)
            for row in rows:
                yield row
            if len(rows) < page:
                return
            version = rows[-1][2] + (1 if forward else -1)
            if remaining is not None:
                remaining -= len(rows)
