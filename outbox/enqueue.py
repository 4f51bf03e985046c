"""Integration messages that are not domain events, enqueued in the caller's transaction.

An `OutboxMessage` is appended to an outbox stream (``outbox-<key>``) like any event, in
the caller's transaction when ``conn=`` is given: it commits with the caller's other
writes or not at all. The relays deliver it like the events, with the same guarantees:
its own ``type``, ``subject`` and ``data`` become the message's, its event id the
message id.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import ClassVar, Final, overload

from pydantic import JsonValue

from eventstore.events import Event, uuid7
from eventstore.store import (
    AppendResult,
    AsyncConnectionLike,
    AsyncEventStore,
    ConnectionLike,
    EventStore,
)

__all__ = ["OUTBOX_STREAM_PREFIX", "OutboxMessage", "enqueue", "outbox_stream"]

OUTBOX_STREAM_PREFIX: Final = "outbox-"


class OutboxMessage(Event):
    """Holds an integration message to publish: its type, JSON data and optional subject.

    ``destination`` names the one relay that takes it (``None``: every relay that takes
    enqueued messages).
    """

    event_type: ClassVar[str] = "outbox.Message"

    type: str
    data: JsonValue = None
    subject: str | None = None
    destination: str | None = None


def outbox_stream(key: str | None) -> str:
    """Returns the stream a message with this ordering key goes to (a new one without)."""
    return OUTBOX_STREAM_PREFIX + (key if key is not None else str(uuid7()))


@overload
def enqueue(
    store: EventStore,
    message: OutboxMessage,
    *,
    conn: ConnectionLike | None = None,
    key: str | None = None,
    message_id: uuid.UUID | None = None,
) -> AppendResult: ...


@overload
def enqueue(
    store: AsyncEventStore,
    message: OutboxMessage,
    *,
    conn: AsyncConnectionLike | None = None,
    key: str | None = None,
    message_id: uuid.UUID | None = None,
) -> Awaitable[AppendResult]: ...


def enqueue(
    store: EventStore | AsyncEventStore,
    message: OutboxMessage,
    *,
    conn: ConnectionLike | AsyncConnectionLike | None = None,
    key: str | None = None,
    message_id: uuid.UUID | None = None,
) -> AppendResult | Awaitable[AppendResult]:
    """Appends an integration message to an outbox stream, in ``conn``'s transaction if given.

    With an async store, await the result. Messages with the same ``key`` share a stream
    and are delivered in the order they were enqueued (their transactions serialise on
    that stream, like appends to one aggregate); without a key each message gets a stream
    of its own. ``message_id`` makes a retried enqueue idempotent (the same id at the
    same place is appended once). The store's registry learns `OutboxMessage` if needed.
    """
    if OutboxMessage.event_type not in store.registry:
        store.registry.register(OutboxMessage)
    ids = None if message_id is None else [message_id]
    return store.append(outbox_stream(key), message, event_ids=ids, conn=conn)  # type: ignore[arg-type]
