"""Each publisher against its real broker: the envelope arrives, a message the broker refuses
for good holds its stream while the others flow, and a retry sends the held events in order;
the inbox makes a consumer that gets every message twice apply each once."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import httpx
import psycopg
import pytest

from eventstore import PostgresEventStore
from eventstore.subscriptions import SubscriptionStore
from outbox import (
    Message,
    PermanentPublishError,
    Relay,
    RelayGroup,
    TransientPublishError,
    inbox,
)
from outbox.publishers.nats import NatsPublisher
from outbox.publishers.rabbitmq import RabbitMQPublisher, process_delivery
from outbox.publishers.redis import RedisPublisher
from outbox.publishers.webhook import WebhookPublisher
from tests.outbox.brokers import (
    RABBITMQ_URL,
    SECRET,
    Server,
    free_port,
    rabbitmq_queue,
    rabbitmq_remove,
    unique,
)
from tests.outbox.kits import POISON, Kit, NatsKit, RabbitMQKit, RedisKit, WebhookKit
from tests.outbox.support import Deposited, make_registry, running


@pytest.fixture(params=["rabbitmq", "nats", "redis", "webhook"])
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[Kit]:
    made: Kit
    if request.param == "rabbitmq":
        request.getfixturevalue("rabbitmq")
        made = RabbitMQKit("rabbitmq", "unroutable: 312 NO_ROUTE")
    elif request.param == "nats":
        made = NatsKit("nats", "too large: ", server=request.getfixturevalue("nats"))
    elif request.param == "redis":
        made = RedisKit(
            "redis", "refused by Redis: WRONGTYPE", server=request.getfixturevalue("redis")
        )
    else:
        made = WebhookKit(
            "webhook", "HTTP 400 Bad Request", receiver=request.getfixturevalue("webhook")
        )
    await made.setup()
    try:
        yield made
    finally:
        await made.teardown()


def first_arrivals(messages: list[Message]) -> dict[str, list[int]]:
    """Returns each stream's versions in arrival order, duplicates (by id) dropped."""
    seen: set[str] = set()
    streams: dict[str, list[int]] = {}
    for message in messages:
        if message.id not in seen:
            seen.add(message.id)
            streams.setdefault(message.stream_id, []).append(message.stream_version)
    return streams


async def test_a_refused_message_is_a_dead_letter_holding_only_its_stream_until_retried(
    kit: Kit, eventstore_database_url: str
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    with PostgresEventStore(url, registry=registry) as store:
        for n in range(1, 6):
            for stream in ("held-1", "flowing-1", "flowing-2"):
                poisoned = stream == "held-1" and n == 3
                store.append(stream, Deposited(amount=n, note=POISON if poisoned else ""))
    relay = Relay(kit.name, kit.publisher(), source="//tests/outbox", batch_size=8, retries=2)
    group = RelayGroup(registry, (relay,))
    async with running(url, group) as subscriptions:
        await subscriptions.wait_until_caught_up(relay.subscription.name, timeout=30)
        letters = await subscriptions.dead_letters(relay.subscription.name)
    assert [(d.stream_id, d.version, d.reason) for d in letters] == [
        ("held-1", 3, "handler_failed"),
        ("held-1", 4, "held"),
        ("held-1", 5, "held"),
    ]
    assert kit.cause in (letters[0].error or ""), letters[0].error
    arrived = await kit.received()
    assert first_arrivals(arrived) == {
        "held-1": [1, 2],
        "flowing-1": [1, 2, 3, 4, 5],
        "flowing-2": [1, 2, 3, 4, 5],
    }
    sample = next(m for m in arrived if m.stream_id == "flowing-2" and m.stream_version == 4)
    assert (sample.type, sample.subject, sample.source) == (
        "bank.Deposited",
        "flowing-2",
        "//tests/outbox",
    )
    assert sample.json() == {"amount": 4, "note": ""}
    uuid.UUID(sample.id)

    await kit.fix()
    outcome = await group.retry_dead_letters(kit.name, url=url)
    await group.close()
    assert outcome.released == ("held-1",), outcome
    assert first_arrivals(await kit.received())["held-1"] == [1, 2, 3, 4, 5]


async def test_a_consumer_given_every_message_twice_applies_each_once(
    rabbitmq: None, eventstore_database_url: str
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    exchange, queue = unique("outbox-inbox"), unique("outbox-inbox")
    await rabbitmq_queue(exchange, queue, "#")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE balances (account text PRIMARY KEY, total bigint NOT NULL)")
    with PostgresEventStore(url, registry=registry) as store:
        for n in range(1, 11):
            store.append(f"account-{n % 3}", Deposited(amount=n))
    publisher = RabbitMQPublisher(RABBITMQ_URL, exchange=exchange, exchange_type="topic")
    group = RelayGroup(registry, (Relay("ledger", publisher, source="/bank", batch_size=4),))
    try:
        # Published, then published again from the start: every message arrives twice.
        for _ in range(2):
            async with running(url, group) as subscriptions:
                await subscriptions.wait_until_caught_up("relay:ledger", timeout=20)
            with SubscriptionStore(url, registry=registry) as steering:
                steering.reset("relay:ledger", to_end=False)

        failed_once: set[str] = set()

        async def apply(message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "INSERT INTO balances VALUES (%s, %s) ON CONFLICT (account) "
                "DO UPDATE SET total = balances.total + EXCLUDED.total",
                (message.subject, message.json()["amount"]),
            )
            if message.stream_version == 2 and message.stream_id not in failed_once:
                failed_once.add(message.stream_id)
                raise RuntimeError("the consumer fails once, after writing")

        fresh = 0
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with (
            connection,
            await psycopg.AsyncConnection.connect(url, autocommit=True) as conn,
        ):
            channel = await connection.channel()
            consumed = await channel.declare_queue(queue, durable=True)
            while (delivery := await consumed.get(fail=False, no_ack=False)) is not None:
                assert delivery.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                assert delivery.message_id == delivery.headers["cloudEvents_id"]
                # A failure rolls back and requeues: the delivery comes again.
                with contextlib.suppress(RuntimeError):
                    fresh += await process_delivery(delivery, conn, "balances", apply)
        assert fresh == 10
        assert len(failed_once) == 3
        with psycopg.connect(url) as conn:
            totals = dict(conn.execute("SELECT account, total FROM balances").fetchall())
            recorded = conn.execute(
                "SELECT count(*) FROM eventstore.inbox WHERE consumer = 'balances'"
            ).fetchone()
        assert totals == {
            f"account-{k}": sum(n for n in range(1, 11) if n % 3 == k) for k in range(3)
        }
        assert recorded == (10,)
        assert await queue_length(queue) == 0
    finally:
        await group.close()
        await rabbitmq_remove(exchange, queue)


async def queue_length(queue: str) -> int:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def test_the_inbox_records_a_message_once_per_consumer_in_the_callers_transaction(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async with inbox.processing(conn, "a", "m-1") as fresh:
            assert fresh
        async with inbox.processing(conn, "a", "m-1") as fresh:
            assert not fresh
        async with inbox.processing(conn, "b", "m-1") as fresh:
            assert fresh  # another consumer processes the same message on its own

        async def fail_while_processing() -> None:
            async with inbox.processing(conn, "a", "m-2") as fresh:
                assert fresh
                raise ZeroDivisionError  # the effects fail: the inbox row goes with them

        with pytest.raises(ZeroDivisionError):
            await fail_while_processing()
        async with inbox.processing(conn, "a", "m-2") as fresh:
            assert fresh
    with psycopg.connect(url) as sync_conn:
        with inbox.processing_sync(sync_conn, "a", "m-1") as fresh:
            assert not fresh
        with inbox.processing_sync(sync_conn, "a", uuid.UUID(int=7)) as fresh:
            assert fresh
        rows = sync_conn.execute(
            "SELECT consumer, message_id FROM eventstore.inbox ORDER BY 1, 2"
        ).fetchall()
    assert rows == [("a", "00000000-0000-0000-0000-000000000007"), ("a", "m-1"), ("a", "m-2"),
                    ("b", "m-1")]  # fmt: skip


def a_message(size: int = 10, type_: str = "bank.Deposited") -> Message:
    return Message(
        id=str(uuid.uuid4()),
        source="/tests",
        type=type_,
        subject="account-1",
        time=dt.datetime.now(dt.UTC),
        data=b'"' + b"x" * size + b'"',
        stream_id="account-1",
        stream_version=1,
        global_position=1,
    )


async def test_unreachable_brokers_are_outages_not_refusals() -> None:
    port = free_port()  # nothing listens there
    publishers = [
        RabbitMQPublisher(f"amqp://guest:guest@127.0.0.1:{port}/", connect_timeout=2),
        NatsPublisher(f"nats://127.0.0.1:{port}", connect_timeout=2),
        RedisPublisher(f"redis://127.0.0.1:{port}/0", connect_timeout=2),
        WebhookPublisher(f"http://127.0.0.1:{port}/hooks", secret=SECRET, timeout=2),
    ]
    for publisher in publishers:
        with pytest.raises(TransientPublishError):
            await publisher.publish([a_message()])
        await publisher.close()


async def test_a_message_over_the_nats_servers_max_payload_is_refused_for_good(
    nats: Server,
) -> None:
    publisher = NatsPublisher(f"nats://127.0.0.1:{nats.port}", subject="nowhere")
    try:
        with pytest.raises(PermanentPublishError, match="too large: 2000002 bytes"):
            await publisher.publish([a_message(2_000_000)])
    finally:
        await publisher.close()


async def test_a_type_missing_from_the_routing_key_mapping_is_refused_for_good(
    rabbitmq: None,
) -> None:
    publisher = RabbitMQPublisher(RABBITMQ_URL, routing_key={"bank.Deposited": "q"})
    try:
        with pytest.raises(PermanentPublishError, match=r"no routing key for type 'x\.Other'"):
            await publisher.publish([a_message(type_="x.Other")])
    finally:
        await publisher.close()


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        (400, PermanentPublishError),
        (404, PermanentPublishError),
        (410, PermanentPublishError),
        (302, TransientPublishError),
        (408, TransientPublishError),
        (429, TransientPublishError),
        (500, TransientPublishError),
        (503, TransientPublishError),
        ("timeout", TransientPublishError),
        (204, None),
    ],
)
async def test_webhook_answers_are_confirmations_refusals_or_outages(
    answer: int | str, outcome: type[Exception] | None
) -> None:
    def receiver(request: httpx.Request) -> httpx.Response:
        if answer == "timeout":
            raise httpx.ReadTimeout("no answer", request=request)
        assert isinstance(answer, int)
        return httpx.Response(answer, text="nope")

    publisher = WebhookPublisher(
        "https://hooks.test/in", secret=SECRET, transport=httpx.MockTransport(receiver)
    )
    try:
        if outcome is None:
            await publisher.publish([a_message()])
        else:
            with pytest.raises(outcome):
                await publisher.publish([a_message()])
    finally:
        await publisher.close()
