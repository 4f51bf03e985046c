"""The event store's capabilities as protocols, implemented in memory and on Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Protocol
from uuid import UUID

from eventstore._core import AppendResult, ExpectedVersion, Snapshot, StreamInfo
from eventstore.events import Event, EventMetadata, EventRegistry, RawRecordedEvent, RecordedEvent

__all__ = ["AsyncEventStore", "EventStore"]


class EventStore(Protocol):
    """Appends to and reads streams, synchronously."""

    @property
    def registry(self) -> EventRegistry: ...

    def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ...,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: Any = None,
    ) -> AppendResult: ...

    def stream_info(self, stream_id: str, *, conn: Any = None) -> StreamInfo: ...

    def save_snapshot(self, snapshot: Snapshot, *, conn: Any = None) -> None: ...

    def load_snapshot(self, stream_id: str, *, conn: Any = None) -> Snapshot | None: ...

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: Any = None,
    ) -> Iterator[RecordedEvent[Event]]: ...

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: Any = None,
    ) -> Iterator[RawRecordedEvent]: ...

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: Any = None
    ) -> Iterator[tuple[int, Event]]: ...


class AsyncEventStore(Protocol):
    """Appends to and reads streams, with asyncio."""

    @property
    def registry(self) -> EventRegistry: ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ...,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: Any = None,
    ) -> AppendResult: ...

    async def stream_info(self, stream_id: str, *, conn: Any = None) -> StreamInfo: ...

    async def save_snapshot(self, snapshot: Snapshot, *, conn: Any = None) -> None: ...

    async def load_snapshot(self, stream_id: str, *, conn: Any = None) -> Snapshot | None: ...

    def read_stream(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: Any = None,
    ) -> AsyncIterator[RecordedEvent[Event]]: ...

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: str = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: Any = None,
    ) -> AsyncIterator[RawRecordedEvent]: ...

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: Any = None
    ) -> AsyncIterator[tuple[int, Event]]: ...
