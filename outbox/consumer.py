"""The consumer side: apply a message at most once, in the consumer's own transaction.

`apply_once` is what every broker's helper does between receiving a message and
acknowledging it: in one transaction on the consumer's connection, it records the message
id in the inbox and, only if the id was not there, runs the handler; both commit
together. The helper acknowledges the message after that commit, so a crash before the
acknowledgement means a redelivery, which the inbox recognises and acknowledges without
applying it again. The helpers, one per broker, each in its publisher's module:

- RabbitMQ: `outbox.publishers.rabbitmq.process_delivery` (ack; requeue on failure);
- NATS JetStream: `outbox.publishers.nats.process_nats_message` (ack; nak on failure);
- Redis Streams: `outbox.publishers.redis.process_entry` (``XACK`` in a consumer group;
  left pending on failure);
- webhooks: `outbox.publishers.webhook.process_webhook` (verifies the signature; the
  receiver answers 2xx once it returns, 5xx if it raised).

With OpenTelemetry, the transaction runs in a ``process`` span that continues the
message's trace (see `outbox.tracing`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from eventstore.errors import ConfigurationError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from outbox import inbox
from outbox.message import Message
from outbox.tracing import processing

__all__ = ["Handle", "apply_once", "require_idle"]

Handle = Callable[[Message, "psycopg.AsyncConnection[Any]"], Awaitable[None]]
"""A consumer's handler: applies one message's effects through the connection it is given
(inside the transaction that records the message in the inbox)."""


async def apply_once(
    message: Message,
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    handle: Handle,
    *,
    system: str = "outbox",
    schema: str = DEFAULT_SCHEMA,
) -> bool:
    """Applies a message at most once for ``consumer``; returns whether it was new.

    In one transaction on ``conn`` (which must have none open: the caller acknowledges
    after the commit), the message id is recorded in the inbox and, if it was not there,
    ``handle(message, conn)`` applies the effects. If ``handle`` raises, the transaction
    rolls back (the inbox row with it) and the error propagates. ``system`` names the
    broker in the tracing span.
    """
    require_idle(conn)
    with processing(message, consumer=consumer, system=system) as record:
        async with inbox.processing(conn, consumer, message.id, schema=schema) as fresh:
            if fresh:
                await handle(message, conn)
        record(fresh)
    return fresh


def require_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """Raises `ConfigurationError` unless ``conn`` has no transaction open."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ConfigurationError(
            "a consumer helper needs a connection with no open transaction: the "
            "acknowledgement must come after the commit of the effects"
        )
