"""Errors raised by the event store, all under one root.

::

    EventStoreError
    ├── ConfigurationError            bad settings, wrong driver, unsupported connection,
    │   │                             an event class declared without a type name
    │   └── PermissionDeniedError     the database role lacks a privilege (a GRANT)
    ├── DatabaseUnavailableError      the server cannot be reached, or the connection was lost
    ├── SchemaNotMigratedError        the tables are missing
    ├── InvalidArgumentError          a bad argument (read bounds, expected version); a ValueError
    │   ├── InvalidStreamIdError      empty, too long or containing NUL
    │   └── InvalidEventError         a payload that would not read back as written, stored
    │                                 data that no longer validates against its class, or
    │                                 a read's event not of the class given as of_type
    ├── UnknownEventTypeError         a type name with no registered class; a LookupError
    ├── UpcastError                   an upcaster chain is broken, or an upcaster raised
    ├── DuplicateEventIdError         event ids already stored, not as this same append
    ├── ConcurrencyError
    │   ├── WrongExpectedVersionError the stream is not at the expected version
    │   └── TransactionConflictError  Postgres aborted the transaction: retry all of it
    ├── AggregateError                an aggregate cannot apply an event, or has no category
    ├── AggregateNotFoundError        no stream for the aggregate id; a LookupError
    └── SubscriptionError
        ├── ShardCountChangedError    a subscription's shard count differs from its
        │                             checkpoints'; also a ConfigurationError
        ├── SubscriptionNotFoundError no checkpoints under that name; a LookupError
        └── WaitTimeoutError          wait_for gave up before the subscription caught up;
                                      a TimeoutError

Every error is raised before anything is written, or after the write was rolled back;
none leaves a partial append behind.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AggregateError",
    "AggregateNotFoundError",
    "ConcurrencyError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DuplicateEventIdError",
    "EventStoreError",
    "InvalidArgumentError",
    "InvalidEventError",
    "InvalidStreamIdError",
    "PermissionDeniedError",
    "SchemaNotMigratedError",
    "ShardCountChangedError",
    "SubscriptionError",
    "SubscriptionNotFoundError",
    "TransactionConflictError",
    "UnknownEventTypeError",
    "UpcastError",
    "WaitTimeoutError",
    "WrongExpectedVersionError",
]


class EventStoreError(Exception):
    """Roots every error this toolkit raises on purpose."""


class ConfigurationError(EventStoreError):
    """Reports settings or arguments the store cannot work with."""


class PermissionDeniedError(ConfigurationError):
    """Reports a statement the database role may not run (a missing GRANT).

    The message names what was refused; `eventstore grants ROLE` prints what an
    application role needs.
    """


class DatabaseUnavailableError(EventStoreError):
    """Reports that the database could not be reached in time."""


class SchemaNotMigratedError(EventStoreError):
    """Reports that the event store tables are missing.

    Run `eventstore migrate`, or ``alembic upgrade heads`` when the revisions are in the
    application's alembic tree; or the store was given another ``schema=``.
    """


class InvalidArgumentError(EventStoreError, ValueError):
    """Reports an argument the store cannot work with."""


class InvalidStreamIdError(InvalidArgumentError):
    """Reports a stream id that cannot be stored.

    Attributes:
        stream_id: The stream id as given (its ``repr`` when it was not a str).
        reason: Why it cannot be stored: empty, not a str, NUL characters, a lone
            surrogate, or longer than the byte limit.
    """

    def __init__(self, stream_id: str, reason: str) -> None:
        shown = stream_id if len(stream_id) <= 60 else stream_id[:57] + "..."
        super().__init__(f"invalid stream id {shown!r}: {reason}")
        self.stream_id = stream_id
        self.reason = reason


class InvalidEventError(InvalidArgumentError):
    """Reports an event payload that cannot be validated or encoded.

    Attributes:
        event: What was refused, when there is one thing to show: the event being
            encoded, or on read the decoded `RecordedEvent` (``of_type`` mismatch) or the
            `RawRecordedEvent` (metadata that no longer validates); else None.
    """

    def __init__(self, message: str, *, event: Any = None) -> None:
        super().__init__(message)
        self.event = event


class UnknownEventTypeError(EventStoreError, LookupError):
    """Reports an event type name with no registered class.

    On read, ``record`` holds the raw stored event (payload as a dict), so nothing is lost.

    Attributes:
        event_type: The stored type name that no class is registered for.
        record: On read, the `RawRecordedEvent` as stored; else None.
    """

    def __init__(self, event_type: str, *, record: Any = None) -> None:
        super().__init__(
            f"unknown event type {event_type!r}: register its class in the EventRegistry"
        )
        self.event_type = event_type
        self.record = record


class UpcastError(EventStoreError):
    """Reports an upcaster chain that cannot bring a stored event to the current version.

    Attributes:
        event_type: The stored type name of the event.
        from_version: The schema version it was stored with.
        to_version: The schema version of the registered class.
    """

    def __init__(self, event_type: str, from_version: int, to_version: int, reason: str) -> None:
        super().__init__(
            f"cannot upcast {event_type!r} from schema version {from_version} "
            f"to {to_version}: {reason}"
        )
        self.event_type = event_type
        self.from_version = from_version
        self.to_version = to_version


class DuplicateEventIdError(EventStoreError):
    """Reports event ids already stored, but not as this exact append.

    Attributes:
        stream_id: The stream the append went to.
        event_ids: The ids concerned: those found stored, or all the append's; empty when
            only the database's unique constraint reported the clash. The message shows
            the first five.
    """

    def __init__(
        self, stream_id: str, event_ids: list[Any], *, reason: str = "already stored elsewhere"
    ) -> None:
        super().__init__(
            f"event ids {reason} (appending to {stream_id!r}): "
            + ", ".join(str(e) for e in event_ids[:5])
        )
        self.stream_id = stream_id
        self.event_ids = event_ids


class ConcurrencyError(EventStoreError):
    """Roots errors caused by a concurrent writer."""


class TransactionConflictError(ConcurrencyError):
    """Reports a transaction Postgres aborted to keep concurrent ones consistent."""


class WrongExpectedVersionError(ConcurrencyError):
    """Reports that a stream is not at the version the append expected.

    Attributes:
        stream_id: The stream the append went to.
        expected: The `expected_version` the append gave: a version, `NO_STREAM` or
            `STREAM_EXISTS`.
        actual: The stream's version when the append ran, None when there is no stream.
    """

    def __init__(self, stream_id: str, expected: object, actual: int | None) -> None:
        actual_text = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream_id!r}: expected {expected}, but it is at {actual_text}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class AggregateError(EventStoreError):
    """Reports an aggregate that cannot apply an event (no handler for its class)."""


class AggregateNotFoundError(EventStoreError, LookupError):
    """Reports that no stream exists for the aggregate id.

    Attributes:
        aggregate: The aggregate class's name.
        aggregate_id: The id that has no stream.
    """

    def __init__(self, aggregate: str, aggregate_id: str) -> None:
        super().__init__(f"{aggregate} {aggregate_id!r} not found")
        self.aggregate = aggregate
        self.aggregate_id = aggregate_id


class SubscriptionError(EventStoreError):
    """Roots errors of the subscription engine."""


class ShardCountChangedError(SubscriptionError, ConfigurationError):
    """Reports a subscription configured with another shard count than it ran with.

    Events are assigned to shards by ``shard_key % shards``: with another count, a stream's
    events would move to another shard mid-stream, with another checkpoint, and be skipped
    or handled twice. Keep the count, reset the subscription (``eventstore subscriptions
    reset``), or start a new subscription name.

    Attributes:
        name: The subscription.
        stored: The shard count its checkpoints were made with.
        configured: The shard count it was configured with now.
    """

    def __init__(self, name: str, stored: int, configured: int) -> None:
        super().__init__(
            f"subscription {name!r} runs with {stored} shard(s), configured with {configured}: "
            "keep the count, reset the subscription, or use a new name"
        )
        self.name = name
        self.stored = stored
        self.configured = configured


class SubscriptionNotFoundError(SubscriptionError, LookupError):
    """Reports that no subscription of that name has checkpoints in the database.

    Attributes:
        name: The subscription asked for.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"no subscription named {name!r} has run against this database")
        self.name = name


class WaitTimeoutError(SubscriptionError, TimeoutError):
    """Reports that a subscription did not reach what `wait_for` waited for in time.

    Attributes:
        name: The subscription waited for.
        timeout: The seconds waited.
    """

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"subscription {name!r} did not catch up within {timeout:g} s")
        self.name = name
        self.timeout = timeout
