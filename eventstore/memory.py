"""In-memory event stores for tests: the same rules as Postgres, no database."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventstore import _append, _rows
from eventstore._append import AppendPlan
from eventstore._rows import RawRow
from eventstore.errors import ConfigurationError, DuplicateEventIdError, InvalidArgumentError
from eventstore.events import Event, EventMetadata, RawRecordedEvent, RecordedEvent
from eventstore.registry import EventRegistry
from eventstore.store import ANY, AppendResult, ExpectedVersion, Snapshot, StreamInfo

__all__ = ["AsyncInMemoryEventStore", "InMemoryEventStore"]


class InMemoryEventStore:
    """Keeps streams in a dict; validation, versions and idempotency follow the real store.

    Payloads are stored encoded, exactly as Postgres would hold them, so reads go through
    the same decoding and upcasting as the Postgres store. Thread-safe.
    """

    def __init__(self, registry: EventRegistry) -> None:
        self._registry = registry
        self._streams: dict[str, list[RawRow]] = {}
        self._by_id: dict[UUID, RawRow] = {}
        self._position = 0
        self._transaction = 0
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    @property
    def registry(self) -> EventRegistry:
        """Returns the registry that encodes and decodes this store's events."""
        return self._registry

    def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ANY,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: object = None,
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

    def _found(self, plan: AppendPlan) -> list[tuple[UUID, str, int, int, int]]:
        rows = (self._by_id.get(i) for i in plan.event_ids)
        return [(r[3], r[1], r[2], r[0], r[9]) for r in rows if r is not None]

    def _write(self, plan: AppendPlan, version: int) -> AppendResult:
        self._transaction += 1
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
                self._transaction,
            )
            stream.append(row)
            self._by_id[e.event_id] = row
            written.append((row[0], row[2], row[9]))
        return _append.result_from_rows(plan, written)

    def stream_info(self, stream_id: str, *, conn: object = None) -> StreamInfo:
        """Returns whether a stream exists and its current version."""
        _refuse_connection(conn)
        stream_id = _append.validate_stream_id(stream_id)
        with self._lock:
            version = len(self._streams.get(stream_id, ()))
        return StreamInfo(stream_id, exists=version > 0, version=version)

    def save_snapshot(self, snapshot: Snapshot, *, conn: object = None) -> None:
        """Stores a snapshot unless a newer one for the stream is already stored."""
        _refuse_connection(conn)
        try:  # Postgres stores it as jsonb: refuse what it would refuse
            json.loads(snapshot.state)
        except ValueError as exc:
            raise InvalidArgumentError(f"snapshot state is not JSON: {exc}") from exc
        with self._lock:
            known = self._snapshots.get(snapshot.stream_id)
            if known is None or known.version < snapshot.version:
                self._snapshots[snapshot.stream_id] = snapshot

    def load_snapshot(self, stream_id: str, *, conn: object = None) -> Snapshot | None:
        """Returns the stream's latest snapshot, or None."""
        _refuse_connection(conn)
        return self._snapshots.get(_append.validate_stream_id(stream_id))

    def delete_snapshot(self, stream_id: str, *, conn: object = None) -> None:
        """Removes the stream's snapshot."""
        _refuse_connection(conn)
        self._snapshots.pop(_append.validate_stream_id(stream_id), None)

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: object = None,
    ) -> Iterator[RecordedEvent[Event]]:
        """Yields a stream's events as typed, current-version events."""
        rows = self._rows(stream_id, direction, from_version, limit, conn)
        return (_rows.decode_row(self._registry, row) for row in rows)  # lazy, as Postgres

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: object = None
    ) -> Iterator[tuple[int, Event]]:
        """Yields ``(version, typed event)`` pairs: the lean read that rebuilds aggregates."""
        rows = self._rows(stream_id, "forward", from_version, None, conn)
        decode = self._registry.decode
        return ((r[2], decode(r[4], r[5], r[6])) for r in rows)

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: object = None,
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
        conn: object,
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


class AsyncInMemoryEventStore:
    """Offers the in-memory store through the async API, for tests of async code."""

    def __init__(self, registry: EventRegistry) -> None:
        self.sync = InMemoryEventStore(registry)

    @property
    def registry(self) -> EventRegistry:
        """Returns the registry that encodes and decodes this store's events."""
        return self.sync.registry

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ANY,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: object = None,
    ) -> AppendResult:
        """Appends events if the stream is at ``expected_version``."""
        return self.sync.append(
            stream_id,
            events,
            expected_version=expected_version,
            metadata=metadata,
            event_ids=event_ids,
            conn=conn,
        )

    async def stream_info(self, stream_id: str, *, conn: object = None) -> StreamInfo:
        """Returns whether a stream exists and its current version."""
        return self.sync.stream_info(stream_id, conn=conn)

    async def save_snapshot(self, snapshot: Snapshot, *, conn: object = None) -> None:
        """Stores a snapshot unless a newer one for the stream is already stored."""
        self.sync.save_snapshot(snapshot, conn=conn)

    async def load_snapshot(self, stream_id: str, *, conn: object = None) -> Snapshot | None:
        """Returns the stream's latest snapshot, or None."""
        return self.sync.load_snapshot(stream_id, conn=conn)

    async def delete_snapshot(self, stream_id: str, *, conn: object = None) -> None:
        """Removes the stream's snapshot."""
        self.sync.delete_snapshot(stream_id, conn=conn)

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: object = None,
    ) -> AsyncIterator[RecordedEvent[Event]]:
        """Yields a stream's events as typed, current-version events."""
        return _aiter(
            self.sync.read_stream(
                stream_id, direction=direction, from_version=from_version, limit=limit, conn=conn
            )
        )

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: object = None
    ) -> AsyncIterator[tuple[int, Event]]:
        """Yields ``(version, typed event)`` pairs: the lean read that rebuilds aggregates."""
        return _aiter(self.sync.read_stream_data(stream_id, from_version=from_version, conn=conn))

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: object = None,
    ) -> AsyncIterator[RawRecordedEvent]:
        """Yields a stream's events as stored, payloads as dicts."""
        return _aiter(
            self.sync.read_stream_raw(
                stream_id, direction=direction, from_version=from_version, limit=limit, conn=conn
            )
        )


T = TypeVar("T")


async def _aiter(items: Iterator[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def _refuse_connection(conn: object) -> None:
    if conn is not None:
        raise ConfigurationError("the in-memory event store does not take a connection")
