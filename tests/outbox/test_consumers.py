"""The consumer helpers of NATS JetStream, Redis Streams and webhooks against the real brokers
(RabbitMQ's `process_delivery` is in test_publishers): a consumer that gets every message
twice, and fails once after writing, applies each message once and acknowledges them all
only after its transaction committed; a message not in the envelope is refused for good."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from typing import Any

import httpx
import psycopg
import pytest
import redis.asyncio as aioredis
import standardwebhooks
from nats import connect as nats_connect
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from eventstore import PostgresEventStore
from eventstore.errors import ConfigurationError, InvalidArgumentError
from eventstore.subscriptions import SubscriptionStore
from outbox import Message, Publisher, Relay, RelayGroup
from outbox.consumer import apply_once
from outbox.publishers.nats import NatsPublisher, process_nats_message
from outbox.publishers.redis import RedisPublisher, process_entry
from outbox.publishers.webhook import WebhookPublisher, process_webhook
from tests.outbox.brokers import SECRET, Server, unique
from tests.outbox.support import Deposited, make_registry, running, until

EVENTS = 9
STREAMS = 3


class Ledger:
    """The consumer's effects: a balances table; fails once per stream at version 2."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failed_once: set[str] = set()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE balances (account text PRIMARY KEY, total bigint NOT NULL)")

    async def apply(self, message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute(
            "INSERT INTO balances VALUES (%s, %s) ON CONFLICT (account) "
            "DO UPDATE SET total = balances.total + EXCLUDED.total",
            (message.subject, message.json()["amount"]),
        )
        if message.stream_version == 2 and message.stream_id not in self.failed_once:
            self.failed_once.add(message.stream_id)
            raise RuntimeError("the consumer fails once, after writing")

    def check(self) -> None:
        """Every event applied exactly once, and recorded once in the inbox."""
        with psycopg.connect(self.url) as conn:
            totals = dict(conn.execute("SELECT account, total FROM balances").fetchall())
            recorded = conn.execute(
                "SELECT count(*) FROM eventstore.inbox WHERE consumer = 'ledger'"
            ).fetchone()
        assert totals == {
            f"account-{k}": sum(n for n in range(1, EVENTS + 1) if n % STREAMS == k)
            for k in range(STREAMS)
        }
        assert recorded == (EVENTS,)
        assert len(self.failed_once) == STREAMS


def append_events(url: str) -> None:
    with PostgresEventStore(url, registry=make_registry()) as store:
        for n in range(1, EVENTS + 1):
            store.append(f"account-{n % STREAMS}", Deposited(amount=n))


async def publish_twice(url: str, publisher: Publisher) -> None:
    """Runs a relay to the end, resets it and runs it again: every message goes out twice."""
    registry = make_registry()
    group = RelayGroup(registry, (Relay("ledger", publisher, source="/bank", batch_size=4),))
    try:
        for _ in range(2):
            async with running(url, group) as subscriptions:
                await subscriptions.wait_until_caught_up("relay:ledger", timeout=30)
            with SubscriptionStore(url, registry=registry) as steering:
                steering.reset("relay:ledger", to_end=False)
    finally:
        await group.close()


async def test_a_jetstream_consumer_applies_each_message_once_and_acks_after_the_commit(
    nats: Server, eventstore_database_url: str
) -> None:
    url, server = eventstore_database_url, f"nats://127.0.0.1:{nats.port}"
    stream = unique("LEDGER")
    ledger = Ledger(url)
    append_events(url)
    client = await nats_connect(server)
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    try:
        await publish_twice(url, NatsPublisher(server, subject=lambda m: f"{stream}.{m.type}"))
        # The stream's duplicate window stored each message once: redeliver them all
        # through a second consumer too, so that the inbox sees every message twice.
        fresh = 0
        for durable in ("ledger-a", "ledger-b"):
            fresh += await consume_jetstream(js, stream, durable, url, ledger)
        assert fresh == EVENTS
        ledger.check()
    finally:
        await js.delete_stream(stream)
        await client.close()


async def consume_jetstream(
    js: JetStreamContext, stream: str, durable: str, url: str, ledger: Ledger
) -> int:
    """Consumes the stream through a new durable pull consumer; returns the fresh count."""
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30)
    pull = await js.pull_subscribe(f"{stream}.>", durable=durable, config=config)
    fresh = 0
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

        async def consume_all() -> bool:
            nonlocal fresh
            try:
                batch = await pull.fetch(EVENTS, timeout=0.5)
            # nats-py raises its own TimeoutError, or (a fetch whose deadline ran out
            # between its two requests) asyncio's: both are the builtin TimeoutError.
            except TimeoutError:
                info = await js.consumer_info(stream, durable)
                return info.num_pending == 0 and info.num_ack_pending == 0
            for msg in batch:
                with contextlib.suppress(RuntimeError):  # nak'ed: JetStream redelivers it
                    fresh += await process_nats_message(msg, conn, "ledger", ledger.apply)
            return False

        await until(consume_all, 30, f"{durable} consumed and acked everything")
    return fresh


async def test_a_redis_consumer_group_applies_each_entry_once_and_acks_after_the_commit(
    redis: Server, eventstore_database_url: str
) -> None:
    url, server = eventstore_database_url, f"redis://127.0.0.1:{redis.port}/0"
    key, group = unique("ledger"), "ledger"
    ledger = Ledger(url)
    append_events(url)
    client = aioredis.Redis.from_url(server)
    await client.xgroup_create(key, group, id="0", mkstream=True)
    try:
        await publish_twice(url, RedisPublisher(server, stream=key))
        assert await client.xlen(key) == 2 * EVENTS
        fresh = 0
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:

            async def consume_all() -> bool:
                nonlocal fresh
                # First this consumer's pending entries (those a failure left), then new ones.
                for start in ("0", ">"):
                    replies = await client.xreadgroup(group, "c1", {key: start}, count=EVENTS)
                    entries = [e for _, stream_entries in replies for e in stream_entries]
                    for entry in entries:
                        with contextlib.suppress(RuntimeError):  # left pending: read from "0"
                            fresh += await process_entry(
                                client, key, group, entry, conn, "ledger", ledger.apply
                            )
                    if entries:
                        return False
                pending = await client.xpending(key, group)
                return int(pending["pending"]) == 0

            await until(consume_all, 30, "every entry consumed and acknowledged")
        assert fresh == EVENTS
        ledger.check()

        await client.xadd(key, {"not": "an envelope"})
        ((_, (entry,)),) = await client.xreadgroup(group, "c1", {key: ">"})
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            with pytest.raises(InvalidArgumentError, match="no data field"):
                await process_entry(client, key, group, entry, conn, "ledger", ledger.apply)
        assert int((await client.xpending(key, group))["pending"]) == 0
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_webhook_receiver_applies_each_message_once_and_answers_after_the_commit(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    ledger = Ledger(url)
    append_events(url)
    answers: list[int] = []
    fresh = 0

    async def receiver(request: httpx.Request) -> httpx.Response:
        nonlocal fresh
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            try:
                new = await process_webhook(
                    request.content, request.headers, conn, "ledger", ledger.apply, secret=SECRET
                )
                fresh += new  # not `fresh += await ...`: requests run concurrently
                status = 204
            except InvalidArgumentError:
                status = 400
            except RuntimeError:
                status = 500  # the sender tries again
        answers.append(status)
        return httpx.Response(status)

    hooks = WebhookPublisher(
        "https://ledger.test/hooks", secret=SECRET, transport=httpx.MockTransport(receiver)
    )
    await publish_twice(url, hooks)
    assert fresh == EVENTS
    assert answers.count(500) == STREAMS
    # A batch with a 500 is sent again whole: more than two deliveries of some messages.
    assert answers.count(204) >= 2 * EVENTS
    ledger.check()


def a_message() -> Message:
    return Message(
        id=str(uuid.uuid4()),
        source="/tests",
        type="bank.Deposited",
        subject="account-1",
        time=dt.datetime.now(dt.UTC),
        data=b'{"amount": 1}',
        stream_id="account-1",
        stream_version=1,
        global_position=1,
    )


def sign(message_id: str, body: bytes) -> dict[str, str]:
    """Returns the Standard Webhooks headers the publisher sends with ``body``."""
    now = dt.datetime.now(dt.UTC)
    signature = standardwebhooks.Webhook(SECRET).sign(message_id, now, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


async def test_a_webhook_with_a_bad_signature_or_body_is_refused_before_any_effect(
    eventstore_database_url: str,
) -> None:
    message = a_message()
    body = message.structured()
    headers = sign(message.id, body)
    applied: list[Message] = []

    async def handle(message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
        applied.append(message)

    async with await psycopg.AsyncConnection.connect(
        eventstore_database_url, autocommit=True
    ) as conn:
        tampered = body.replace(b'"amount":1', b'"amount":1000')
        with pytest.raises(InvalidArgumentError, match="webhook signature"):
            await process_webhook(tampered, headers, conn, "c", handle, secret=SECRET)
        with pytest.raises(InvalidArgumentError, match="webhook signature"):
            await process_webhook(body, {}, conn, "c", handle, secret=SECRET)
        with pytest.raises(InvalidArgumentError, match="not UTF-8"):
            await process_webhook(b"\xff", headers, conn, "c", handle, secret=SECRET)
        for not_a_message in (b"[1, 2]", b'{"id": "x"}', b"{"):
            with pytest.raises(InvalidArgumentError, match="envelope"):
                await process_webhook(
                    not_a_message, sign("x", not_a_message), conn, "c", handle, secret=SECRET
                )
        assert await process_webhook(body, headers, conn, "c", handle, secret=SECRET)
        assert not await process_webhook(body, headers, conn, "c", handle, secret=SECRET)
    assert len(applied) == 1


async def test_a_connection_inside_a_transaction_is_refused(eventstore_database_url: str) -> None:
    async def handle(message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
        raise AssertionError("not applied")

    async with await psycopg.AsyncConnection.connect(eventstore_database_url) as conn:
        await conn.execute("SELECT 1")  # opens a transaction (not autocommit)
        with pytest.raises(ConfigurationError, match="no open transaction"):
            await apply_once(a_message(), conn, "c", handle)
