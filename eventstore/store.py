"""The event store's capabilities as protocols, and the values they take and return.

Implemented in memory (`eventstore.memory`) and on Postgres (`eventstore.postgres.store`).
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, TypeAlias
from uuid import UUID

from eventstore.events import Event, EventMetadata, RawRecordedEvent, RecordedEvent
from eventstore.registry import EventRegistry

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "AsyncEventStore",
    "EventStore",
    "ExpectedVersion",
    "Snapshot",
    "StreamInfo",
    "StreamState",
]


class StreamState(enum.Enum):
    """Names an expected stream state that is not an exact version."""

    ANY = "any"
    NO_STREAM = "no stream"
    STREAM_EXISTS = "stream exists"

    def __str__(self) -> str:
        return self.value


ANY: Final = StreamState.ANY
NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS
ExpectedVersion: TypeAlias = int | StreamState


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    """Describes a committed (or idempotently repeated) append.

    ``transaction_id`` is the Postgres transaction that wrote the events; subscriptions use
    it for read-your-writes waits, which positions alone cannot give soundly.
    """

    stream_id: str
    first_version: int
    last_version: int
    positions: tuple[int, ...]
    transaction_id: int
    event_ids: tuple[uuid.UUID, ...]
    repeated: bool = False

    @property
    def next_expected_version(self) -> int:
        """Returns the expected version for the stream's next append."""
        return self.last_version


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """Describes a stream: whether it exists and its current version (0 when it does not)."""

    stream_id: str
    exists: bool
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """Holds an aggregate's encoded state as of a stream version."""

    stream_id: str
    version: int
    state_type: str
    schema_version: int
    state: str

    def params(self) -> dict[str, Any]:
        """Returns the statement parameters."""
        return dataclasses.asdict(self)


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
