"""The relays the outbox reliability tests run in real relay processes.

``eventstore relay run tests.outbox.relay_app:group`` imports `group`, which reads its
configuration from the environment, so one module serves every test:

- ``OUTBOX_RABBITMQ_EXCHANGE``: a relay ``rabbitmq`` to this (topic) exchange;
- ``OUTBOX_NATS_URL`` and ``OUTBOX_NATS_SUBJECT``: a relay ``nats`` publishing to
  ``<subject>.<type>``;
- ``OUTBOX_REDIS_URL`` and ``OUTBOX_REDIS_KEY``: a relay ``redis`` to that stream;
- ``OUTBOX_WEBHOOK_URL``: a relay ``webhook`` to that endpoint (the tests' secret);
- ``OUTBOX_BATCH_SIZE`` (default 20), ``OUTBOX_SHARDS`` (default 2);
- ``OUTBOX_PUBLISH_DELAY`` (``a-b`` seconds, default 0): each publish call waits that
  long first, drawn per call, so that kills land while a batch is being published.

The events are the subscription reliability tests' (`tests.reliability.writer` appends
them), so their writers and outcome logs serve here too.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence

from outbox import Message, Publisher, Relay, RelayGroup
from outbox.publishers.nats import NatsPublisher
from outbox.publishers.rabbitmq import RabbitMQPublisher
from outbox.publishers.redis import RedisPublisher
from outbox.publishers.webhook import WebhookPublisher
from tests.outbox.brokers import RABBITMQ_URL, SECRET
from tests.reliability.subscriber_app import make_registry

RELAYS = ("rabbitmq", "nats", "redis", "webhook")


class Delayed:
    """A publisher that waits a little before each call (so kills land mid-publish)."""

    def __init__(self, publisher: Publisher, low: float, high: float) -> None:
        self.publisher = publisher
        self.low, self.high = low, high

    async def publish(self, messages: Sequence[Message]) -> None:
        await asyncio.sleep(random.uniform(self.low, self.high))
        await self.publisher.publish(messages)

    async def close(self) -> None:
        await self.publisher.close()


def publishers() -> dict[str, Publisher]:
    env = os.environ
    found: dict[str, Publisher] = {}
    if "OUTBOX_RABBITMQ_EXCHANGE" in env:
        found["rabbitmq"] = RabbitMQPublisher(
            RABBITMQ_URL, exchange=env["OUTBOX_RABBITMQ_EXCHANGE"], exchange_type="topic"
        )
    if "OUTBOX_NATS_URL" in env:
        subject = env["OUTBOX_NATS_SUBJECT"]
        found["nats"] = NatsPublisher(
            env["OUTBOX_NATS_URL"], subject=lambda m: f"{subject}.{m.type}", timeout=3
        )
    if "OUTBOX_REDIS_URL" in env:
        found["redis"] = RedisPublisher(
            env["OUTBOX_REDIS_URL"], stream=env["OUTBOX_REDIS_KEY"], timeout=3
        )
    if "OUTBOX_WEBHOOK_URL" in env:
        found["webhook"] = WebhookPublisher(env["OUTBOX_WEBHOOK_URL"], secret=SECRET, timeout=3)
    return found


def group() -> RelayGroup:
    """Returns the relays, configured from the environment (see the module docstring)."""
    low, _, high = os.environ.get("OUTBOX_PUBLISH_DELAY", "0").partition("-")
    delay = float(low), float(high or low)
    relays = tuple(
        Relay(
            name,
            Delayed(publisher, *delay) if delay[1] > 0 else publisher,
            source="//tests/outbox/reliability",
            batch_size=int(os.environ.get("OUTBOX_BATCH_SIZE", "20")),
            shards=int(os.environ.get("OUTBOX_SHARDS", "2")),
        )
        for name, publisher in publishers().items()
    )
    return RelayGroup(make_registry(), relays)
