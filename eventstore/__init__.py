"""Event sourcing on Postgres: an append-only log with optimistic concurrency."""

from eventstore._core import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    StreamInfo,
    StreamState,
)
from eventstore.async_store import AsyncPostgresEventStore
from eventstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    DatabaseUnavailableError,
    DuplicateEventIdError,
    EventStoreError,
    InvalidEventError,
    InvalidStreamIdError,
    SchemaNotMigratedError,
    UnknownEventTypeError,
    UpcastError,
    WrongExpectedVersionError,
)
from eventstore.events import (
    Event,
    EventMetadata,
    EventRegistry,
    RawRecordedEvent,
    RecordedEvent,
    uuid7,
)
from eventstore.memory import AsyncInMemoryEventStore, InMemoryEventStore
from eventstore.protocol import AsyncEventStore, EventStore
from eventstore.schema import include_object, make_metadata, metadata
from eventstore.store import PostgresEventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "AsyncEventStore",
    "AsyncInMemoryEventStore",
    "AsyncPostgresEventStore",
    "ConcurrencyError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DuplicateEventIdError",
    "Event",
    "EventMetadata",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "ExpectedVersion",
    "InMemoryEventStore",
    "InvalidEventError",
    "InvalidStreamIdError",
    "PostgresEventStore",
    "RawRecordedEvent",
    "RecordedEvent",
    "SchemaNotMigratedError",
    "StreamInfo",
    "StreamState",
    "UnknownEventTypeError",
    "UpcastError",
    "WrongExpectedVersionError",
    "include_object",
    "make_metadata",
    "metadata",
    "uuid7",
]
