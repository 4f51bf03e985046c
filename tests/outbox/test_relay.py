"""The relay in one process, publishing to the recording publisher: order, filters, enqueued
messages, refusals that hold one stream, outages that postpone."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest

from eventstore import EventRegistry, PostgresEventStore, RecordedEvent, message_context
from eventstore.cli import main as eventstore_main
from eventstore.subscriptions import SubscriptionStore
from outbox import (
    Message,
    OutboxMessage,
    RecordingPublisher,
    Relay,
    RelayGroup,
    enqueue,
)
from tests.outbox.support import Deposited, Withdrawn, append, make_registry, running, until


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return make_registry()


CURRENT_GROUP: RelayGroup | None = None


def current_group() -> RelayGroup:
    """Returns the group a test is running, for the command line to import."""
    assert CURRENT_GROUP is not None
    return CURRENT_GROUP


def deduplicated(published: list[Message]) -> list[Message]:
    seen: set[str] = set()
    first = []
    for message in published:
        if message.id not in seen:
            seen.add(message.id)
            first.append(message)
    return first


async def test_every_event_is_published_once_in_stream_order_in_its_envelope(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    with PostgresEventStore(url, registry=registry) as store:
        for n in range(1, 11):
            for s in range(5):
                with message_context(correlation_id=f"corr-{s}", causation_id="cmd-1"):
                    store.append(f"account-{s}", Deposited(amount=n))
    publisher = RecordingPublisher()
    relay = Relay("bank", publisher, source="//bank.test", batch_size=7, shards=2)
    async with running(url, RelayGroup(registry, (relay,))) as subscriptions:
        await subscriptions.wait_until_caught_up("relay:bank", timeout=20)
    assert len(publisher.published) == 50
    assert len({m.id for m in publisher.published}) == 50
    for s in range(5):
        assert publisher.stream(f"account-{s}") == list(range(1, 11))
    first = next(m for m in publisher.published if m.stream_id == "account-3")
    attributes = first.attributes()
    assert attributes["specversion"] == "1.0"
    assert attributes["source"] == "//bank.test"
    assert attributes["type"] == "bank.Deposited"
    assert attributes["subject"] == attributes["partitionkey"] == "account-3"
    assert attributes["streamversion"] == "1"
    assert attributes["correlationid"] == "corr-3"
    assert attributes["causationid"] == "cmd-1"
    assert int(attributes["globalposition"]) == first.global_position
    assert first.json() == {"amount": 1, "note": ""}
    uuid.UUID(first.id)
    assert publisher.closed  # the group closes its publishers when it stops


async def test_filters_and_a_mapper_choose_which_events_leave_and_as_what(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    append(url, registry, "account-1", Deposited(amount=5, note="secret"), Withdrawn(amount=2))
    append(url, registry, "audit-1", Deposited(amount=7))
    last = append(url, registry, "account-2", Deposited(amount=9))

    def public(event: RecordedEvent[Any], message: Message) -> Message | None:
        if event.data.amount > 8:
            return None  # stays in the service
        return message.replace(type="bank.deposit.v1", data={"cents": event.data.amount * 100})

    deposits = RecordingPublisher()
    accounts = RecordingPublisher()
    relays = (
        Relay("deposits", deposits, source="/bank", event_types=[Deposited], mapper=public),
        Relay("accounts", accounts, source="/bank", stream_prefixes=["account-"], enqueued=False),
    )
    async with running(url, RelayGroup(registry, relays)) as subscriptions:
        for name in ("relay:deposits", "relay:accounts"):
            await subscriptions.wait_for(name, last, timeout=20)
    assert [(m.subject, m.type, m.json()) for m in deposits.published] == [
        ("account-1", "bank.deposit.v1", {"cents": 500}),
        ("audit-1", "bank.deposit.v1", {"cents": 700}),
    ]
    # Streams go out side by side, each in version order.
    assert sorted((m.stream_id, m.stream_version, m.type) for m in accounts.published) == [
        ("account-1", 1, "bank.Deposited"),
        ("account-1", 2, "bank.Withdrawn"),
        ("account-2", 1, "bank.Deposited"),
    ]
    assert accounts.stream("account-1") == [1, 2]


async def test_enqueued_messages_leave_only_if_the_callers_transaction_commits(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    with PostgresEventStore(url, registry=registry) as store, psycopg.connect(url) as conn:
        with conn.transaction():
            enqueue(store, OutboxMessage(type="mail.Send", data={"to": "a"}), conn=conn, key="c-1")
            enqueue(store, OutboxMessage(type="mail.Send", data={"to": "b"}), conn=conn, key="c-1")
            store.append("account-1", Deposited(amount=1), conn=conn)

        def fail_after_enqueueing() -> None:
            with conn.transaction():
                enqueue(store, OutboxMessage(type="mail.Send", data={"to": "never"}), conn=conn)
                raise ZeroDivisionError  # the caller's transaction fails

        with pytest.raises(ZeroDivisionError):
            fail_after_enqueueing()
        other = OutboxMessage(type="crm.Sync", data=[1, 2], destination="crm", subject="c-9")
        last = enqueue(store, other)
    mail = RecordingPublisher()
    crm = RecordingPublisher()
    relays = (
        Relay("mail", mail, source="/shop", event_types=[]),
        Relay("crm", crm, source="/shop", event_types=[Deposited]),
    )
    async with running(url, RelayGroup(registry, relays)) as subscriptions:
        for name in ("relay:mail", "relay:crm"):
            await subscriptions.wait_for(name, last, timeout=20)
    assert [(m.type, m.json(), m.stream_id, m.stream_version) for m in mail.published] == [
        ("mail.Send", {"to": "a"}, "outbox-c-1", 1),
        ("mail.Send", {"to": "b"}, "outbox-c-1", 2),
    ]
    # Messages without a destination go to every relay that takes enqueued messages.
    assert sorted((m.type, str(m.json()), m.subject) for m in crm.published) == [
        ("bank.Deposited", "{'amount': 1, 'note': ''}", "account-1"),
        ("crm.Sync", "[1, 2]", "c-9"),
        ("mail.Send", "{'to': 'a'}", "outbox-c-1"),
        ("mail.Send", "{'to': 'b'}", "outbox-c-1"),
    ]


async def test_a_refused_message_holds_its_stream_while_others_flow_until_a_retry_sends_it(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    with PostgresEventStore(url, registry=registry) as store:
        for n in range(1, 6):
            for stream in ("bad-1", "good-1", "good-2"):
                store.append(stream, Deposited(amount=n))
    refusing = {"on": True}

    def refuse(message: Message) -> str | None:
        poisoned = message.stream_id == "bad-1" and message.stream_version == 3
        return "too large: 5 MB" if refusing["on"] and poisoned else None

    publisher = RecordingPublisher(refuse=refuse)
    relay = Relay("poisoned", publisher, source="/bank", batch_size=8, retries=2)
    group = RelayGroup(registry, (relay,))
    async with running(url, group) as subscriptions:
        await subscriptions.wait_until_caught_up("relay:poisoned", timeout=20)
        letters = await subscriptions.dead_letters("relay:poisoned")
        (status,) = await subscriptions.status("relay:poisoned")
    assert [(d.stream_id, d.version, d.reason) for d in letters] == [
        ("bad-1", 3, "handler_failed"),
        ("bad-1", 4, "held"),
        ("bad-1", 5, "held"),
    ]
    assert letters[0].error is not None
    assert letters[0].error.startswith("PermanentPublishError: too large: 5 MB (message ")
    assert status.dead_letters == 3 and status.lag_events == 0
    unique = deduplicated(publisher.published)
    assert [m.stream_version for m in unique if m.stream_id == "bad-1"] == [1, 2]
    for stream in ("good-1", "good-2"):
        assert [m.stream_version for m in unique if m.stream_id == stream] == [1, 2, 3, 4, 5]
    # Narrowing down re-sends little: what the broker confirmed is not sent again.
    duplicates = len(publisher.published) - len(unique)
    assert duplicates <= 2 * 2, Counter(m.id for m in publisher.published).most_common(3)

    refusing["on"] = False
    global CURRENT_GROUP
    CURRENT_GROUP = group
    # The command line's retry (in a thread: it runs an event loop of its own).
    argv = ["relay", "retry", f"{__name__}:current_group", "poisoned", "--url", url]
    assert await asyncio.to_thread(eventstore_main, argv) == 0
    assert [m.stream_version for m in deduplicated(publisher.published)][-3:] == [3, 4, 5]
    assert deduplicated(publisher.published)[-1].stream_id == "bad-1"
    later = append(url, registry, "bad-1", Deposited(amount=6))
    async with running(url, group) as subscriptions:
        await subscriptions.wait_for("relay:poisoned", later, timeout=20)
        assert await subscriptions.dead_letters("relay:poisoned") == []
    bad = [m.stream_version for m in deduplicated(publisher.published) if m.stream_id == "bad-1"]
    assert bad == [1, 2, 3, 4, 5, 6]


async def test_an_unavailable_broker_postpones_batches_shows_why_and_parks_nothing(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    publisher = RecordingPublisher()
    publisher.unavailable = "connection refused"
    for n in range(3):
        append(url, registry, f"account-{n}", Deposited(amount=n))
    relay = Relay("flaky", publisher, source="/bank")
    async with running(url, RelayGroup(registry, (relay,))) as subscriptions:

        async def error() -> str | None:
            shards = await subscriptions.status("relay:flaky")
            return shards[0].last_error if shards else None

        assert await until(error, 10, "the status shows the outage") == (
            "TransientPublishError: connection refused"
        )
        calls = publisher.calls
        await until(lambda: publisher.calls > calls, 10, "the relay tries again")
        assert publisher.published == []
        publisher.unavailable = None
        await subscriptions.wait_until_caught_up("relay:flaky", timeout=20)
        assert await subscriptions.dead_letters("relay:flaky") == []
        assert await error() is None
    assert sorted(m.stream_id for m in publisher.published) == [f"account-{n}" for n in range(3)]


async def test_a_relay_reset_to_the_start_publishes_every_event_again(
    eventstore_database_url: str,
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    for n in range(3):
        append(url, registry, f"account-{n}", Deposited(amount=n), Deposited(amount=n))
    publisher = RecordingPublisher()
    group = RelayGroup(registry, (Relay("again", publisher, source="/bank"),))
    for _ in range(2):
        async with running(url, group) as subscriptions:
            await subscriptions.wait_until_caught_up("relay:again", timeout=20)
        with SubscriptionStore(url, registry=registry) as steering:
            steering.reset("relay:again", to_end=False)
    assert sorted(Counter(m.id for m in publisher.published).values()) == [2] * 6


def status_row(output: str, first: str) -> dict[str, str]:
    """Returns the row of a status table whose first column is ``first``, by header."""
    lines = output.splitlines()
    header = lines[0].replace("oldest s", "oldest_s").replace("lag s", "lag_s").split()
    row = next(line.split() for line in lines[1:] if line.split()[:1] == [first])
    return dict(zip(header, row, strict=False))


async def test_status_shows_lag_the_oldest_unpublished_event_held_streams_and_dead_letters(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    with PostgresEventStore(url, registry=registry) as store:
        for n in range(1, 6):
            for stream in ("bad-1", "bad-2", "good-1"):
                store.append(stream, Deposited(amount=n))

    def refuse(message: Message) -> str | None:
        return (
            "unroutable"
            if message.stream_id.startswith("bad-") and message.stream_version == 4
            else None
        )

    group = RelayGroup(
        registry, (Relay("shown", RecordingPublisher(refuse), source="/b", retries=1),)
    )
    async with running(url, group) as subscriptions:
        await subscriptions.wait_until_caught_up("relay:shown", timeout=20)
    for n in range(3):
        append(url, registry, "good-1", Deposited(amount=n))
    capsys.readouterr()
    args = ["relay", "status", "--url", url]
    assert await asyncio.to_thread(eventstore_main, args) == 0
    row = status_row(capsys.readouterr().out, "shown")
    assert (row["lag"], row["held"], row["dead"], row["status"]) == ("3", "2", "4", "running")
    with SubscriptionStore(url, registry=registry) as steering:
        (shard,) = steering.status("relay:shown")
    with PostgresEventStore(url, registry=registry) as store:
        oldest_unpublished = list(store.read_stream("good-1"))[5]  # the first of the three
    assert shard.oldest_unhandled_at == oldest_unpublished.recorded_at
    assert shard.lag_seconds >= 0.0 and float(row["oldest_s"]) >= 0.0
    args = ["subscriptions", "status", "--url", url]
    assert await asyncio.to_thread(eventstore_main, args) == 0
    row = status_row(capsys.readouterr().out, "relay:shown")
    assert (row["lag"], row["dead"]) == ("3", "4")
    assert float(row["lag_s"]) >= 0.0
