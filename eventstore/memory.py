"""In-memory event stores for tests: the same rules as Postgres, no database."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from types import TracebackType
from typing import Any, Self, TypeVar, overload
from uuid import UUID

from eventstore import _append, _rows
from eventstore._append import AppendPlan
from eventstore._rows import RawRow
from eventstore.errors import ConfigurationError, DuplicateEventIdError
from eventstore.events import Event, EventMetadata, NewEvent, RawRecordedEvent, RecordedEvent
from eventstore.registry import EventRegistry
from eventstore.store import (
    ANY,
    AppendResult,
    AsyncConnectionLike,
    ConnectionLike,
    Direction,
    ExpectedVersion,
    Snapshot,
    StreamInfo,
)

__all__ = ["AsyncInMemoryEventStore", "InMemoryEventStore"]

E = TypeVar("E", bound=Event)
T = TypeVar("T")

# The async stores whose transaction the current task (or a task it started) is inside.
_inside: contextvars.ContextVar[frozenset[object]] = contextvars.ContextVar(
    "eventstore_memory_transactions", default=frozenset()
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Checkpoint:
    """Holds what a transaction restores when its block raises."""

    streams: dict[str, list[RawRow]]
    by_id: dict[UUID, RawRow]
    snapshots: dict[str, Snapshot]


class InMemoryEventStore:
    """Keeps streams in a dict; validation, versions and idempotency follow the real store.

    Payloads are stored encoded, exactly as Postgres would hold them, so reads go through
    the same decoding and upcasting as the Postgres store. Thread-safe. It takes no
    connection: ``conn`` must be None, which is what `transaction()` yields.
    """

    def __init__(self, registry: EventRegistry) -> None:
        self._registry = registry
        self._streams: dict[str, list[RawRow]] = {}
        self._by_id: dict[UUID, RawRow] = {}
        self._position = 0
        self._transaction = 0
        self._open_transaction: int | None = None
        self._snapshots: dict[str, Snapshot] = {}
        # Reentrant: a transaction holds it while the appends inside take it again.
        self._lock = threading.RLock()

    @property
    def registry(self) -> EventRegistry:
        """Returns the registry that encodes and decodes this store's events."""
        return self._registry

    def close(self) -> None:
        """Does nothing: there is nothing to release (the events stay)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Yields None, to pass as ``conn``: the block's writes commit together, or not at all.

        When the block raises, its appends and snapshots are undone (the positions they took
        stay unused, as in Postgres). The appends inside share one ``transaction_id``. Other
        threads wait until the block ends: transactions here run one at a time.
        """
        with self._lock:
            checkpoint = _Checkpoint(
                {k: list(v) for k, v in self._streams.items()},
                dict(self._by_id),
                dict(self._snapshots),
            )
            self._transaction += 1
            outer, self._open_transaction = self._open_transaction, self._transaction
            try:
                yield None
            except BaseException:
                self._streams, self._by_id = checkpoint.streams, checkpoint.by_id
                self._snapshots = checkpoint.snapshots
                raise
            finally:
                self._open_transaction = outer

    def command_transaction(self) -> AbstractContextManager[None]:
        """Opens a `transaction`, in which the repositories' serialising mode runs a command.

        Nothing travels here, so there is nothing to pipeline: it is `transaction` itself.
        """
        return self.transaction()

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
        """Appends events if the stream is at ``expected_version``; see the Postgres store."""
        _refuse_connection(conn)
        plan = _append.plan_append(
            self._registry, stream_id, events, expected_version, metadata, event_ids
        )
        with self._lock:
            stream = self._streams.get(plan.stream_id)
            actual = len(stream) if stream else None
            duplicate = any(i in self._by_id for i in plan.event_ids)
            if duplicate or not _append.claim_matches(plan.expected, actual):
                repeat = _append.resolve_refused_append(plan, actual, self._found(plan))
                self._check_whole(repeat, stream or [])
                return repeat
            return self._write(plan, actual or 0)

    @staticmethod
    def _check_whole(repeat: AppendResult, stream: list[RawRow]) -> None:
        """Refuses a repeat of only part of an append, as the Postgres store does."""
        for version in (repeat.first_version - 1, repeat.last_version + 1):
            if 1 <= version <= len(stream) and stream[version - 1][9] == repeat.transaction_id:
                raise DuplicateEventIdError(repeat.stream_id, list(repeat.event_ids))

    def _found(self, plan: AppendPlan) -> list[_append.Found]:
        sent = {e.event_id: e for e in plan.events}
        rows = (self._by_id.get(i) for i in plan.event_ids)
        return [(r[3], r[1], r[2], r[0], r[9], _same(r, sent[r[3]])) for r in rows if r]

    def _write(self, plan: AppendPlan, version: int) -> AppendResult:
        xid = self._open_transaction
        if xid is None:
            self._transaction += 1
            xid = self._transaction
        now = dt.datetime.now(dt.UTC)
        stream = self._streams.setdefault(plan.stream_id, [])
        written = []
        for n, e in enumerate(plan.events, start=1):
            self._position += 1
            row = (
                self._position,
                plan.stream_id,
                version + n,
                e.event_id,
                e.event_type,
                e.schema_version,
                e.data,
                e.metadata,
                now,
                xid,
            )
            stream.append(row)
            self._by_id[e.event_id] = row
            written.append((row[0], row[2], row[9]))
        return _append.result_from_rows(plan, written)

    def stream_info(self, stream_id: str, *, conn: ConnectionLike | None = None) -> StreamInfo:
        """Returns whether a stream exists and its current version."""
        _refuse_connection(conn)
        stream_id = _append.validate_stream_id(stream_id)
        with self._lock:
            version = len(self._streams.get(stream_id, ()))
        return StreamInfo(stream_id, exists=version > 0, version=version)

    def save_snapshot(self, snapshot: Snapshot, *, conn: ConnectionLike | None = None) -> None:
        """Stores a snapshot unless a newer one for the stream is already stored."""
        _refuse_connection(conn)
        snapshot = _append.validate_snapshot(snapshot)  # what Postgres would refuse, too
        with self._lock:
            known = self._snapshots.get(snapshot.stream_id)
            if known is None or known.version < snapshot.version or not self._bound(known):
                self._snapshots[snapshot.stream_id] = snapshot

    def load_snapshot(
        self, stream_id: str, *, conn: ConnectionLike | None = None
    ) -> Snapshot | None:
        """Returns the stream's snapshot while the event it was taken at is still there."""
        _refuse_connection(conn)
        with self._lock:
            snapshot = self._snapshots.get(_append.validate_stream_id(stream_id))
            return snapshot if snapshot is not None and self._bound(snapshot) else None

    def _bound(self, snapshot: Snapshot) -> bool:
        """Tells whether the event at the snapshot's version is the one it was taken at."""
        events = self._streams.get(snapshot.stream_id, ())
        if snapshot.version > len(events):
            return False
        return bool(events[snapshot.version - 1][3] == snapshot.event_id)

    def delete_snapshot(self, stream_id: str, *, conn: ConnectionLike | None = None) -> None:
        """Removes the stream's snapshot."""
        _refuse_connection(conn)
        self._snapshots.pop(_append.validate_stream_id(stream_id), None)

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
        """Yields a stream's events as typed, current-version events.

        With ``of_type``, every event must be an instance of that class: another raises
        `InvalidEventError` when the iteration reaches it; see the Postgres store.
        """
        of_type = _rows.check_event_class(of_type)
        rows = self._rows(stream_id, direction, from_version, limit, conn)
        registry = self._registry
        return (_rows.decode_row(registry, row, of_type) for row in rows)  # lazy, as Postgres

    def read_stream_data(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> Iterator[tuple[int, Event]]:
        """Yields ``(version, typed event)`` pairs: the lean read that rebuilds aggregates."""
        rows = self._rows(stream_id, "forward", from_version, None, conn)
        decode = self._registry.decode
        return ((r[2], decode(r[4], r[5], r[6])) for r in rows)

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> Iterator[RawRecordedEvent]:
        """Yields a stream's events as stored, payloads as dicts."""
        rows = self._rows(stream_id, direction, from_version, limit, conn)
        return (_rows.decode_raw_row(row) for row in rows)

    def _rows(
        self,
        stream_id: str,
        direction: str,
        from_version: int | None,
        limit: int | None,
        conn: ConnectionLike | None,
    ) -> Iterator[RawRow]:
        """Checks the arguments now; reads the stream when iteration starts, like Postgres."""
        _refuse_connection(conn)
        stream_id = _append.validate_stream_id(stream_id)
        forward, start, limit = _rows.read_bounds(direction, from_version, limit)
        return self._iter_rows(stream_id, forward, start, limit)

    def _iter_rows(
        self, stream_id: str, forward: bool, start: int, limit: int | None
    ) -> Iterator[RawRow]:
        with self._lock:
            rows = list(self._streams.get(stream_id, ()))
        if forward:
            rows = [r for r in rows if r[2] >= start]
        else:
            rows = [r for r in reversed(rows) if r[2] <= start]
        yield from (rows if limit is None else rows[:limit])

    def lock_stream(self, stream_id: str, *, conn: ConnectionLike | None = None) -> None:
        """Checks the stream id only: transactions here run one at a time already."""
        _refuse_connection(conn)
        _append.validate_stream_id(stream_id)


class AsyncInMemoryEventStore:
    """Offers the in-memory store through the async API, for tests of async code."""

    def __init__(self, registry: EventRegistry) -> None:
        self.sync = InMemoryEventStore(registry)
        self._transaction_lock = asyncio.Lock()

    @property
    def registry(self) -> EventRegistry:
        """Returns the registry that encodes and decodes this store's events."""
        return self.sync.registry

    async def close(self) -> None:
        """Does nothing: there is nothing to release (the events stay)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Yields None, to pass as ``conn``: the block's writes commit together, or not at all.

        Other tasks wait, at their next call on this store, until the block ends; the tasks
        the block itself starts do not. A block opened inside another one joins it (as
        ``conn=None`` does), rolling back only its own writes when it raises.
        """
        if self in _inside.get():
            with self.sync.transaction():
                yield None
            return
        async with self._transaction_lock:
            token = _inside.set(_inside.get() | {self})
            try:
                with self.sync.transaction():
                    yield None
            finally:
                _inside.reset(token)

    def command_transaction(self) -> AbstractAsyncContextManager[None]:
        """Opens a `transaction`, in which the repositories' serialising mode runs a command."""
        return self.transaction()

    async def _turn(self) -> None:
        """Waits while another task's transaction is open, so it never sees half of one."""
        if self._transaction_lock.locked() and self not in _inside.get():
            async with self._transaction_lock:
                pass

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ANY,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> AppendResult:
        """Appends events if the stream is at ``expected_version``."""
        _refuse_connection(conn)
        await self._turn()
        return self.sync.append(
            stream_id,
            events,
            expected_version=expected_version,
            metadata=metadata,
            event_ids=event_ids,
        )

    async def stream_info(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> StreamInfo:
        """Returns whether a stream exists and its current version."""
        _refuse_connection(conn)
        await self._turn()
        return self.sync.stream_info(stream_id)

    async def save_snapshot(
        self, snapshot: Snapshot, *, conn: AsyncConnectionLike | None = None
    ) -> None:
        """Stores a snapshot unless a newer one for the stream is already stored."""
        _refuse_connection(conn)
        await self._turn()
        self.sync.save_snapshot(snapshot)

    async def load_snapshot(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> Snapshot | None:
        """Returns the stream's snapshot while the event it was taken at is still there."""
        _refuse_connection(conn)
        await self._turn()
        return self.sync.load_snapshot(stream_id)

    async def delete_snapshot(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> None:
        """Removes the stream's snapshot."""
        _refuse_connection(conn)
        await self._turn()
        self.sync.delete_snapshot(stream_id)

    @overload
    def read_stream(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: AsyncConnectionLike | None = None,
        of_type: None = None,
    ) -> AsyncIterator[RecordedEvent[Event]]: ...

    @overload
    def read_stream(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: AsyncConnectionLike | None = None,
        of_type: type[E],
    ) -> AsyncIterator[RecordedEvent[E]]: ...

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: AsyncConnectionLike | None = None,
        of_type: type[Event] | None = None,
    ) -> AsyncIterator[RecordedEvent[Any]]:
        """Yields a stream's events as typed, current-version events.

        With ``of_type``, every event must be an instance of that class: another raises
        `InvalidEventError` when the iteration reaches it.
        """
        _refuse_connection(conn)
        events = self.sync.read_stream(
            stream_id,
            direction=direction,
            from_version=from_version,
            limit=limit,
            of_type=of_type,
        )
        return self._aiter(events)

    def read_stream_data(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> AsyncIterator[tuple[int, Event]]:
        """Yields ``(version, typed event)`` pairs: the lean read that rebuilds aggregates."""
        _refuse_connection(conn)
        return self._aiter(self.sync.read_stream_data(stream_id, from_version=from_version))

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> AsyncIterator[RawRecordedEvent]:
        """Yields a stream's events as stored, payloads as dicts."""
        _refuse_connection(conn)
        events = self.sync.read_stream_raw(
            stream_id, direction=direction, from_version=from_version, limit=limit
        )
        return self._aiter(events)

    async def _aiter(self, items: Iterator[T]) -> AsyncIterator[T]:
        await self._turn()
        for item in items:
            yield item

    async def lock_stream(self, stream_id: str, *, conn: AsyncConnectionLike | None = None) -> None:
        """Checks the stream id only: transactions here run one at a time already."""
        _refuse_connection(conn)
        self.sync.lock_stream(stream_id)


def _refuse_connection(conn: object) -> None:
    if conn is not None:
        raise ConfigurationError("the in-memory event store does not take a connection")


def _same(row: RawRow, sent: NewEvent) -> bool:
    """Tells whether a stored row holds the type, schema version and payload sent now."""
    return (row[4], row[5], json.loads(row[6])) == (
        sent.event_type,
        sent.schema_version,
        json.loads(sent.data),
    )
