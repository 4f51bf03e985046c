"""Event sourcing on Postgres: an append-only log with optimistic concurrency."""

from eventstore._core import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    Snapshot,
    StreamInfo,
    StreamState,
)
from eventstore.aggregate import (
    Aggregate,
    AggregateError,
    AggregateNotFoundError,
    Decider,
    applies,
)
from eventstore.async_repository import AsyncDeciderRepository, AsyncRepository
from eventstore.async_store import AsyncPostgresEventStore
from eventstore.context import current_metadata, message_context
from eventstore.errors import (
    ConcurrencyError,
    ConfigurationError,
    DatabaseUnavailableError,
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    InvalidEventError,
    InvalidStreamIdError,
    SchemaNotMigratedError,
    TransactionConflictError,
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
from eventstore.repository import DeciderRepository, Repository
from eventstore.schema import include_object, make_metadata, metadata
from eventstore.store import PostgresEventStore

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "Aggregate",
    "AggregateError",
    "AggregateNotFoundError",
    "AppendResult",
    "AsyncDeciderRepository",
    "AsyncEventStore",
    "AsyncInMemoryEventStore",
    "AsyncPostgresEventStore",
    "AsyncRepository",
    "ConcurrencyError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "Decider",
    "DeciderRepository",
    "DuplicateEventIdError",
    "Event",
    "EventMetadata",
    "EventRegistry",
    "EventStore",
    "EventStoreError",
    "ExpectedVersion",
    "InMemoryEventStore",
    "InvalidArgumentError",
    "InvalidEventError",
    "InvalidStreamIdError",
    "PostgresEventStore",
    "RawRecordedEvent",
    "RecordedEvent",
    "Repository",
    "SchemaNotMigratedError",
    "Snapshot",
    "StreamInfo",
    "StreamState",
    "TransactionConflictError",
    "UnknownEventTypeError",
    "UpcastError",
    "WrongExpectedVersionError",
    "applies",
    "current_metadata",
    "include_object",
    "make_metadata",
    "message_context",
    "metadata",
    "uuid7",
]
