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
    """Reports a stream id that cannot be stored."""

    def __init__(self, stream_id: str, reason: str) -> None:
        shown = stream_id if len(stream_id) <= 60 else stream_id[:57] + "..."
        super().__init__(f"invalid stream id {shown!r}: {reason}")
        self.stream_id = stream_id
        self.reason = reason


class InvalidEventError(InvalidArgumentError):
    """Reports an event payload that cannot be validated or encoded."""

    def __init__(self, message: str, *, event: Any = None) -> None:
        super().__init__(message)
        self.event = event


class UnknownEventTypeError(EventStoreError, LookupError):
    """Reports an event type name with no registered class.

    On read, ``record`` holds the raw stored event (payload as a dict), so nothing is lost.
    """

    def __init__(self, event_type: str, *, record: Any = None) -> None:
        super().__init__(
            f"unknown event type {event_type!r}: register its class in the EventRegistry"
        )
        self.event_type = event_type
        self.record = record


class UpcastError(EventStoreError):
    """Reports an upcaster chain that cannot bring a stored event to the current version."""

    def __init__(self, event_type: str, from_version: int, to_version: int, reason: str) -> None:
        super().__init__(
            f"cannot upcast {event_type!r} from schema version {from_version} "
            f"to {to_version}: {reason}"
        )
        self.event_type = event_type
        self.from_version = from_version
        self.to_version = to_version


class DuplicateEventIdError(EventStoreError):
    """Reports event ids already stored, but not as this exact append."""

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
    """Reports that a stream is not at the version the append expected."""

    def __init__(self, stream_id: str, expected: object, actual: int | None) -> None:
        actual_text = "no stream" if actual is None else f"version {actual}"
        super().__init__(f"stream {stream_id!r}: expected {expected}, but it is at {actual_text}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class AggregateError(EventStoreError):
    """Reports an aggregate that cannot apply an event (no handler for its class)."""


class AggregateNotFoundError(EventStoreError, LookupError):
    """Reports that no stream exists for the aggregate id."""

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
    """Reports that no subscription of that name has checkpoints in the database."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no subscription named {name!r} has run against this database")
        self.name = name


class WaitTimeoutError(SubscriptionError, TimeoutError):
    """Reports that a subscription did not reach what `wait_for` waited for in time."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"subscription {name!r} did not catch up within {timeout:g} s")
        self.name = name
        self.timeout = timeout
