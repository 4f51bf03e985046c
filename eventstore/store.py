"""The event store's capabilities as protocols, and the values they take and return.

Implemented in memory (`eventstore.memory`) and on Postgres (`eventstore.postgres.store`).
This module imports no database driver: the connection types in `ConnectionLike` and
`AsyncConnectionLike` are only named for the type checker.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Literal,
    Protocol,
    Self,
    TypeAlias,
    TypeVar,
    Union,
    overload,
)
from uuid import UUID

from eventstore.events import Event, EventMetadata, RawRecordedEvent, RecordedEvent
from eventstore.registry import EventRegistry

if TYPE_CHECKING:  # only the Postgres modules import the drivers at run time
    import psycopg
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.ext.asyncio import AsyncConnection as SAAsyncConnection
    from sqlalchemy.ext.asyncio import AsyncSession
    from sqlalchemy.orm import Session

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "AsyncConnectionLike",
    "AsyncEventStore",
    "ConnectionLike",
    "Direction",
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
"""Expects nothing: the append goes through whatever the stream's version (the default)."""
NO_STREAM: Final = StreamState.NO_STREAM
"""Expects that the stream does not exist yet (the same as expecting version 0)."""
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS
"""Expects that the stream has at least one event, at whatever version."""
ExpectedVersion: TypeAlias = int | StreamState
"""What an append expects of the stream: an exact version (>= 0), or a `StreamState`."""

# Forward references, so that naming them imports no driver; a `Union` of them, so that
# `ConnectionLike | None` also works in annotations evaluated at run time.
ConnectionLike: TypeAlias = Union["psycopg.Connection[Any]", "SAConnection", "Session"]
"""What ``conn=`` takes: the caller's connection, whose transaction the statements join.

A psycopg 3 ``Connection``, or a SQLAlchemy ``Connection`` or ``Session`` on the
``postgresql+psycopg`` driver.
"""
AsyncConnectionLike: TypeAlias = Union[
    "psycopg.AsyncConnection[Any]", "SAAsyncConnection", "AsyncSession"
]
"""What ``conn=`` takes in the async stores: a psycopg ``AsyncConnection``, or a SQLAlchemy
``AsyncConnection`` or ``AsyncSession`` on the ``postgresql+psycopg`` driver."""

Direction: TypeAlias = Literal["forward", "backward"]
"""The order a read goes in; any other string raises `InvalidArgumentError`."""

E = TypeVar("E", bound=Event)


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
    """Holds an aggregate's encoded state as of a stream version.

    ``event_id`` is the id of the event at ``version``: a snapshot is only loaded while
    that very event is still the one at its version, so a snapshot left over from before a
    restore (the stream rewound, then appended again up to the same version) is ignored.
    """

    stream_id: str
    version: int
    state_type: str
    schema_version: int
    state: str
    event_id: uuid.UUID

    def params(self) -> dict[str, Any]:
        """Returns the statement parameters."""
        return dataclasses.asdict(self)


class EventStore(Protocol):
    """Appends to and reads streams, synchronously.

    Every method that touches the data takes ``conn``: a connection (or session) whose
    transaction the statements join; `transaction()` opens one. The in-memory stores take
    no connection, and their `transaction()` yields None, which every ``conn`` accepts.

    ``lock_stream`` makes the writers of one stream queue: it takes the stream's lock in
    the transaction of ``conn`` until that transaction ends.
    ``command_transaction`` is the transaction one serialised command runs in: on
    Postgres its statements are pipelined and its first append commits it.
    """

    @property
    def registry(self) -> EventRegistry: ...

    def transaction(self) -> AbstractContextManager[ConnectionLike | None]: ...

    def command_transaction(self) -> AbstractContextManager[ConnectionLike | None]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ...,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: ConnectionLike | None = None,
    ) -> AppendResult: ...

    def stream_info(self, stream_id: str, *, conn: ConnectionLike | None = None) -> StreamInfo: ...

    def save_snapshot(self, snapshot: Snapshot, *, conn: ConnectionLike | None = None) -> None: ...

    def load_snapshot(
        self, stream_id: str, *, conn: ConnectionLike | None = None
    ) -> Snapshot | None: ...

    def delete_snapshot(self, stream_id: str, *, conn: ConnectionLike | None = None) -> None: ...

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

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> Iterator[RawRecordedEvent]: ...

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: ConnectionLike | None = None
    ) -> Iterator[tuple[int, Event]]: ...

    def lock_stream(self, stream_id: str, *, conn: ConnectionLike | None = None) -> None: ...


class AsyncEventStore(Protocol):
    """Appends to and reads streams, with asyncio.

    Every method that touches the data takes ``conn``: a connection (or session) whose
    transaction the statements join; `transaction()` opens one. The in-memory stores take
    no connection, and their `transaction()` yields None, which every ``conn`` accepts.

    ``lock_stream`` makes the writers of one stream queue: it takes the stream's lock in
    the transaction of ``conn`` until that transaction ends.
    ``command_transaction`` is the transaction one serialised command runs in: on
    Postgres its statements are pipelined and its first append commits it.
    """

    @property
    def registry(self) -> EventRegistry: ...

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnectionLike | None]: ...

    def command_transaction(self) -> AbstractAsyncContextManager[AsyncConnectionLike | None]: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def append(
        self,
        stream_id: str,
        events: Sequence[Event] | Event,
        *,
        expected_version: ExpectedVersion = ...,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        event_ids: Sequence[UUID] | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> AppendResult: ...

    async def stream_info(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> StreamInfo: ...

    async def save_snapshot(
        self, snapshot: Snapshot, *, conn: AsyncConnectionLike | None = None
    ) -> None: ...

    async def load_snapshot(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> Snapshot | None: ...

    async def delete_snapshot(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> None: ...

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

    def read_stream_raw(
        self,
        stream_id: str,
        *,
        direction: Direction = "forward",
        from_version: int | None = None,
        limit: int | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> AsyncIterator[RawRecordedEvent]: ...

    def read_stream_data(
        self,
        stream_id: str,
        *,
        from_version: int | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> AsyncIterator[tuple[int, Event]]: ...

    async def lock_stream(
        self, stream_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> None: ...
