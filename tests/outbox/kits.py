"""Each broker as the tests see it: a publisher to it, what arrived, a poison and its fix.

A poison is an event the broker refuses for good until an operator fixes something: an
unroutable RabbitMQ message (its routing key has no queue bound), a NATS message larger
than the stream's ``max_msg_size``, a Redis key that is not a stream, a webhook answering
400. The poison events carry ``POISON`` in their note.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import nats
import redis
import standardwebhooks

from outbox import Message, Publisher
from outbox.publishers.nats import NatsPublisher
from outbox.publishers.rabbitmq import RabbitMQPublisher
from outbox.publishers.redis import RedisPublisher
from outbox.publishers.webhook import WebhookPublisher
from tests.outbox.brokers import (
    RABBITMQ_URL,
    SECRET,
    Server,
    WebhookReceiver,
    nats_messages,
    nats_stream,
    rabbitmq_messages,
    rabbitmq_queue,
    rabbitmq_remove,
    redis_messages,
    unique,
)

POISON: Final = "poison" + "x" * 2000  # larger than the NATS kit's max_msg_size


def is_poison(message: Message) -> bool:
    return b'"note":"poison' in message.data


@dataclasses.dataclass
class Kit:
    """One broker: ``cause`` is what the dead letter of the poison says."""

    name: str
    cause: str
    poisoned: bool = True

    async def setup(self) -> None:
        pass

    def publisher(self) -> Publisher:
        raise NotImplementedError

    async def received(self) -> list[Message]:
        raise NotImplementedError

    async def fix(self) -> None:
        self.poisoned = False

    async def teardown(self) -> None:
        pass


@dataclasses.dataclass
class RabbitMQKit(Kit):
    exchange: str = dataclasses.field(default_factory=lambda: unique("outbox-test"))
    queue: str = dataclasses.field(default_factory=lambda: unique("outbox-test"))

    async def setup(self) -> None:
        await rabbitmq_queue(self.exchange, self.queue, "bank.#")

    def publisher(self) -> Publisher:
        def routing_key(message: Message) -> str:
            return "unrouted" if self.poisoned and is_poison(message) else message.type

        return RabbitMQPublisher(
            RABBITMQ_URL, exchange=self.exchange, exchange_type="topic", routing_key=routing_key
        )

    arrived: list[Message] = dataclasses.field(default_factory=list)

    async def received(self) -> list[Message]:
        self.arrived += await rabbitmq_messages(self.queue)  # reading drains the queue
        return list(self.arrived)

    async def teardown(self) -> None:
        await rabbitmq_remove(self.exchange, self.queue)


@dataclasses.dataclass
class NatsKit(Kit):
    server: Server | None = None
    stream: str = dataclasses.field(default_factory=lambda: unique("OUTBOX"))

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"nats://127.0.0.1:{self.server.port}"

    async def setup(self) -> None:
        await nats_stream(self.url, self.stream, [f"{self.stream}.>"], max_msg_size=1024)

    def publisher(self) -> Publisher:
        return NatsPublisher(self.url, subject=lambda m: f"{self.stream}.{m.type}")

    async def received(self) -> list[Message]:
        return await nats_messages(self.url, self.stream)

    async def fix(self) -> None:
        client = await nats.connect(self.url)
        try:
            js = client.jetstream()
            config = (await js.stream_info(self.stream)).config
            await js.update_stream(config, max_msg_size=-1)
        finally:
            await client.close()

    async def teardown(self) -> None:
        client = await nats.connect(self.url)
        try:
            await client.jetstream().delete_stream(self.stream)
        finally:
            await client.close()


@dataclasses.dataclass
class RedisKit(Kit):
    server: Server | None = None
    key: str = dataclasses.field(default_factory=lambda: unique("outbox-events"))

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.port}/0"

    async def setup(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.set(self.key + "-string", "not a stream")
        finally:
            client.close()

    def publisher(self) -> Publisher:
        def key(message: Message) -> str:
            return self.key + "-string" if self.poisoned and is_poison(message) else self.key

        return RedisPublisher(self.url, stream=key)

    async def received(self) -> list[Message]:
        return redis_messages(self.url, self.key)


@dataclasses.dataclass
class WebhookKit(Kit):
    receiver: WebhookReceiver | None = None

    async def setup(self) -> None:
        assert self.receiver is not None
        self.receiver.respond = lambda body: 400 if self.poisoned and b"poison" in body else 200

    def publisher(self) -> Publisher:
        assert self.receiver is not None
        return WebhookPublisher(self.receiver.url, secret=SECRET)

    async def received(self) -> list[Message]:
        assert self.receiver is not None
        verifier = standardwebhooks.Webhook(SECRET)
        for received in self.receiver.received:
            verifier.verify(received.body, received.headers)  # raises when not signed right
            assert received.headers["webhook-id"] == received.message.id
        return self.receiver.messages()
