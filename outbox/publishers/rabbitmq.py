"""RabbitMQ through aio-pika: the relay's publisher, and a consumer helper with the inbox.

The publisher opens a channel with publisher confirms and publishes every message
persistent and ``mandatory``: a message no queue is bound for comes back (``basic.return``)
and is a `PermanentPublishError` ("unroutable"), not a silent drop. A ``basic.nack`` (a
queue refusing messages for now), a timeout and a lost connection are transient; the
connection is opened again on the next call. The CloudEvents attributes travel as
``cloudEvents_*`` headers (the AMQP binding's prefix), the body is the event's JSON, and
the AMQP properties carry ``message_id`` (the event id), ``type``, ``timestamp``,
``content_type`` and ``correlation_id``.

`process_delivery` is the consumer side: the delivery's effects and its inbox row commit
in one transaction, and the delivery is acknowledged only after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import aio_pika
import aiormq
import psycopg
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from aio_pika.abc import AbstractIncomingMessage as Delivery

from eventstore.errors import InvalidArgumentError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from outbox.consumer import Handle, apply_once, require_idle
from outbox.errors import PermanentPublishError, PublishError, TransientPublishError
from outbox.message import Message, binary_headers, message_from_headers

__all__ = [
    "HEADER_PREFIX",
    "RabbitMQPublisher",
    "message_from_delivery",
    "process_delivery",
]

logger = logging.getLogger("outbox.publishers.rabbitmq")

# The CloudEvents AMQP binding's prefix for attributes carried as application properties.
HEADER_PREFIX: Final = "cloudEvents_"
RoutingKey = str | Mapping[str, str] | Callable[[Message], str] | None
# Errors that mean the connection or channel is unusable: open a new one next time.
_CONNECTION_ERRORS: Final = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
)


class RabbitMQPublisher:
    """Publishes messages to a RabbitMQ exchange with publisher confirms.

    - ``exchange``: the exchange name (``""``: the default exchange, routing by queue name);
      with ``exchange_type`` (``"topic"``, ``"direct"``, ...) it is declared, durable, on
      connect; otherwise it must exist.
    - ``routing_key``: a string, a mapping from message type to routing key, or a function
      of the message; by default the message type. A type missing from a mapping is a
      permanent failure of that message.
    - ``timeout``: seconds to wait for a confirmation, ``connect_timeout`` to connect.
    """

    system: ClassVar[str] = "rabbitmq"

    def __init__(
        self,
        url: str = "amqp://guest:guest@127.0.0.1:5672/",
        *,
        exchange: str = "",
        exchange_type: str | None = None,
        routing_key: RoutingKey = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self.exchange_type = exchange_type
        self.routing_key = routing_key
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RabbitMQPublisher(exchange={self.exchange!r})"

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publishes the messages together and waits for the broker's confirmation of each."""
        if not messages:
            return
        exchange = await self._open()
        outcomes = await asyncio.gather(
            *(self._publish_one(exchange, m) for m in messages), return_exceptions=True
        )
        failures = [
            _failure(m, o) for m, o in zip(messages, outcomes, strict=True) if o is not None
        ]
        if any(isinstance(f, TransientPublishError) for f in failures):
            await self.close()  # the channel may be gone: open a new one next time
        # A refusal first: a transient error of another message in the same call (a
        # channel the refusal closed) is retried anyway when the engine narrows down.
        for failure in failures:
            if isinstance(failure, PermanentPublishError):
                raise failure
        for failure in failures:
            raise failure

    async def _publish_one(self, exchange: AbstractExchange, message: Message) -> None:
        routing_key = self._routing_key(message)
        if routing_key is None:
            raise PermanentPublishError(message, f"no routing key for type {message.type!r}")
        await exchange.publish(
            _amqp_message(message), routing_key, mandatory=True, timeout=self.timeout
        )

    def _routing_key(self, message: Message) -> str | None:
        if self.routing_key is None:
            return message.type
        if isinstance(self.routing_key, str):
            return self.routing_key
        if isinstance(self.routing_key, Mapping):
            return self.routing_key.get(message.type)
        return self.routing_key(message)

    async def _open(self) -> AbstractExchange:
        async with self._lock:
            channel = self._channel
            if self._exchange is not None and channel is not None and not channel.is_closed:
                return self._exchange
            await self._close()
            try:
                self._connection = await aio_pika.connect(self.url, timeout=self.connect_timeout)
                channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                self._channel = channel
                self._exchange = await self._declare(channel)
            except (*_CONNECTION_ERRORS, TimeoutError) as exc:
                await self._close()
                raise TransientPublishError(
                    f"cannot connect to RabbitMQ: {_describe(exc)}"
                ) from exc
            return self._exchange

    async def _declare(self, channel: AbstractChannel) -> AbstractExchange:
        if not self.exchange:
            return channel.default_exchange
        if self.exchange_type is not None:
            return await channel.declare_exchange(
                self.exchange, self.exchange_type, durable=True, timeout=self.connect_timeout
            )
        return await channel.get_exchange(self.exchange, ensure=False)

    async def close(self) -> None:
        """Closes the connection (the next publish opens a new one)."""
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            with contextlib.suppress(*_CONNECTION_ERRORS, TimeoutError, RuntimeError):
                await connection.close()


def _amqp_message(message: Message) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.data,
        content_type=message.datacontenttype,
        message_id=message.id,
        correlation_id=message.correlation_id,
        timestamp=message.time,
        type=message.type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=dict(binary_headers(message, HEADER_PREFIX)),
    )


def _failure(message: Message, outcome: BaseException | Any) -> PublishError:
    """Returns the publish error an aio-pika outcome of one message means."""
    if isinstance(outcome, PublishError):
        return outcome
    if isinstance(outcome, aiormq.exceptions.PublishError):  # basic.return: no queue bound
        return PermanentPublishError(message, _unroutable(outcome))
    if isinstance(outcome, aiormq.exceptions.ChannelPreconditionFailed) and "size" in str(outcome):
        return PermanentPublishError(message, f"too large: {outcome}")
    if isinstance(outcome, aiormq.exceptions.DeliveryError):  # basic.nack
        return TransientPublishError(f"RabbitMQ refused the message for now: {outcome}")
    if isinstance(outcome, TimeoutError):
        return TransientPublishError("no confirmation from RabbitMQ in time")
    if isinstance(outcome, _CONNECTION_ERRORS):
        return TransientPublishError(f"RabbitMQ publish failed: {_describe(outcome)}")
    if isinstance(outcome, BaseException):
        raise outcome
    raise AssertionError(f"unexpected publish outcome {outcome!r}")


def _unroutable(error: aiormq.exceptions.PublishError) -> str:
    returned = None if error.message is None else error.message.delivery
    if not isinstance(returned, aiormq.spec.Basic.Return):
        return f"unroutable: {error}"
    return (
        f"unroutable: {returned.reply_code} {returned.reply_text} "
        f"(exchange {returned.exchange!r}, routing key {returned.routing_key!r})"
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".rstrip(": ")


# The consumer side.


def message_from_delivery(delivery: Delivery) -> Message:
    """Returns the message a RabbitMQ delivery carries (published by `RabbitMQPublisher`)."""
    return message_from_headers(
        delivery.headers, HEADER_PREFIX, delivery.body, delivery.content_type
    )


async def process_delivery(
    delivery: Delivery,
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    handle: Handle,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> bool:
    """Applies a delivery at most once, then acknowledges it; returns whether it was new.

    In one transaction on ``conn`` (which must have none open), the message id is
    recorded in the inbox for ``consumer`` and, if it was not there, ``handle(message,
    conn)`` applies the effects (`outbox.consumer.apply_once`); the delivery is acked
    only after the commit, a redelivered one without applying it again. If ``handle``
    raises, the transaction rolls back, the delivery is rejected back to the queue
    (``requeue``) and the error propagates. A delivery that is not in this toolkit's
    envelope is rejected without requeueing (to a dead-letter exchange, if the queue has
    one) and raises `InvalidArgumentError`.
    """
    require_idle(conn)
    try:
        message = message_from_delivery(delivery)
    except InvalidArgumentError:
        await delivery.reject(requeue=False)
        raise
    try:
        fresh = await apply_once(
            message, conn, consumer, handle, system=RabbitMQPublisher.system, schema=schema
        )
    except BaseException:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            await delivery.nack(requeue=True)
        raise
    await delivery.ack()
    return fresh
