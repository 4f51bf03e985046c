"""Fixtures of the outbox tests: the session's private NATS and Redis, a webhook receiver."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from eventstore import EventRegistry
from tests.outbox.brokers import (
    Server,
    WebhookReceiver,
    answers,
    nats_server,
    redis_server,
)
from tests.outbox.support import make_registry


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return make_registry()


@pytest.fixture(scope="session")
def rabbitmq() -> None:
    """Checks that the machine's RabbitMQ answers (`.ci/run` starts it when it does not)."""
    if not answers(5672):
        pytest.fail("RabbitMQ does not answer on 127.0.0.1:5672: run .ci/run, or start it")


def _private(make: Callable[[], Server], binary: str) -> Iterator[Server]:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: the outbox tests run a private one")
    server = make()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def nats() -> Iterator[Server]:
    """A nats-server with JetStream of this test session, on a free port."""
    yield from _private(nats_server, "nats-server")


@pytest.fixture(scope="session")
def redis() -> Iterator[Server]:
    """A redis-server (append-only, fsync always) of this test session, on a free port."""
    yield from _private(redis_server, "redis-server")


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()
