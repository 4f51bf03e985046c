"""The envelope and the relay's ordered publishing, without a database or a broker."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from eventstore import ConfigurationError, EventMetadata, InvalidArgumentError, RecordedEvent
from outbox import Message, OutboxMessage, message_from_event
from outbox.errors import PermanentPublishError
from outbox.message import binary_headers, message_from_headers
from outbox.relay import publish_in_order
from tests.outbox.support import Deposited

RECORDED_AT = dt.datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=dt.UTC)


def recorded(data: Any, stream: str = "account-7", version: int = 3) -> RecordedEvent[Any]:
    return RecordedEvent(
        global_position=1043,
        stream_id=stream,
        version=version,
        event_id=uuid.UUID("0190f3a4-5b6c-7d8e-9f00-112233445566"),
        event_type=type(data).event_type,
        schema_version=1,
        data=data,
        metadata=EventMetadata(
            correlation_id="req-1",
            causation_id="cmd-9",
            traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
        recorded_at=RECORDED_AT,
        transaction_id=77,
    )


def test_an_event_becomes_a_cloudevent_with_the_toolkit_extensions() -> None:
    message = message_from_event(recorded(Deposited(amount=5)), "//bank.example.com")
    assert message.attributes() == {
        "specversion": "1.0",
        "id": "0190f3a4-5b6c-7d8e-9f00-112233445566",
        "source": "//bank.example.com",
        "type": "bank.Deposited",
        "subject": "account-7",
        "time": "2026-12-01T12:30:05.123456+00:00",
        "datacontenttype": "application/json",
        "partitionkey": "account-7",
        "streamversion": "3",
        "globalposition": "1043",
        "correlationid": "req-1",
        "causationid": "cmd-9",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    assert message.json() == {"amount": 5, "note": ""}


def test_an_enqueued_message_is_sent_as_its_own_type_subject_and_data() -> None:
    enqueued = OutboxMessage(type="mail.Send", data={"to": "x@y"}, subject="customer-4")
    message = message_from_event(recorded(enqueued, stream="outbox-c-4", version=1), "/shop")
    assert (message.type, message.subject, message.json()) == (
        "mail.Send",
        "customer-4",
        {"to": "x@y"},
    )
    assert message.stream_id == "outbox-c-4"


def test_the_envelope_survives_binary_headers_and_the_structured_format() -> None:
    message = message_from_event(recorded(Deposited(amount=5)), "/bank").replace(
        type="bank.deposit.v1", data={"cents": 500}, extensions={"tenant": "t1"}
    )
    headers = binary_headers(message, "ce-")
    assert "ce-datacontenttype" not in headers and headers["ce-tenant"] == "t1"
    assert message_from_headers(headers, "ce-", message.data, "application/json") == message
    assert Message.from_structured(message.structured()) == message
    raw = dataclasses.replace(message, data=b"\x00\x01", datacontenttype="application/octet-stream")
    assert Message.from_structured(raw.structured()) == raw


def test_extension_names_follow_cloudevents_and_foreign_messages_are_refused() -> None:
    message = message_from_event(recorded(Deposited(amount=5)), "/bank")
    with pytest.raises(ConfigurationError, match="extension"):
        message.replace(extensions={"Tenant-Id": "x"})
    with pytest.raises(ConfigurationError, match="extension"):
        message.replace(extensions={"subject": "x"})
    with pytest.raises(InvalidArgumentError, match="envelope"):
        message_from_headers({"ce-id": "1"}, "ce-", b"{}", None)


def test_binary_headers_are_the_attributes_but_the_content_type_with_the_prefix() -> None:
    full = message_from_event(recorded(Deposited(amount=1)), "/bank").replace(
        extensions={"tenant": "t1"}
    )
    bare = dataclasses.replace(
        full, subject=None, correlation_id=None, causation_id=None, traceparent=None
    ).replace(extensions={})
    for message in (full, bare):
        expected = {
            "ce-" + name: value
            for name, value in message.attributes().items()
            if name != "datacontenttype"
        }
        assert binary_headers(message, "ce-") == expected
        assert binary_headers(message, "cloudEvents:") == {
            "cloudEvents:" + k[3:]: v for k, v in expected.items()
        }


def _messages(order: list[tuple[str, int]]) -> list[Message]:
    base = message_from_event(recorded(Deposited(amount=1)), "/bank")
    return [
        dataclasses.replace(base, id=f"{s}-{v}", stream_id=s, stream_version=v) for s, v in order
    ]


class _Broker:
    """Confirms calls after a varying number of loop turns, checking the relay's promises."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse
        self.in_flight: set[str] = set()
        self.most = 0
        self.confirmed: list[tuple[str, int]] = []
        self.calls = 0

    async def publish(self, messages: Sequence[Message]) -> None:
        self.calls += 1
        streams = [m.stream_id for m in messages]
        assert len(set(streams)) == len(streams), "two messages of a stream in one call"
        assert not self.in_flight & set(streams), "a stream's next message before its ack"
        self.in_flight |= set(streams)
        self.most = max(self.most, sum(1 for _ in self.in_flight))
        try:
            for _ in range(self.calls % 3 + 1):
                await asyncio.sleep(0)
            for message in messages:
                if message.id == self.refuse:
                    raise PermanentPublishError(message, "refused")
            for message in messages:
                if self.confirmed and message.stream_id in {s for s, _ in self.confirmed}:
                    last = max(v for s, v in self.confirmed if s == message.stream_id)
                    assert message.stream_version == last + 1, "out of order"
                self.confirmed.append((message.stream_id, message.stream_version))
        finally:
            self.in_flight -= set(streams)


async def test_publish_in_order_keeps_each_stream_in_order_and_the_window_bounded() -> None:
    rng = random.Random(7)
    counts: dict[str, int] = {}
    order = []
    for _ in range(500):
        stream = f"s{rng.randrange(40)}"
        counts[stream] = counts.get(stream, 0) + 1
        order.append((stream, counts[stream]))
    broker = _Broker()
    confirmed: set[str] = set()
    await publish_in_order(_messages(order), broker.publish, 16, confirmed)
    assert sorted(broker.confirmed) == sorted(order)
    assert confirmed == {f"{s}-{v}" for s, v in order}
    assert 1 < broker.most <= 16
    await publish_in_order([], broker.publish, 16, set())


async def test_publish_in_order_stops_at_a_refusal_and_keeps_what_was_confirmed() -> None:
    order = [(f"s{n % 5}", n // 5 + 1) for n in range(50)]
    broker = _Broker(refuse="s2-3")
    confirmed: set[str] = set()
    with pytest.raises(PermanentPublishError, match="refused"):
        await publish_in_order(_messages(order), broker.publish, 4, confirmed)
    assert "s2-3" not in confirmed and "s2-4" not in confirmed
    assert {"s2-1", "s2-2"} <= confirmed
    assert confirmed == {f"{s}-{v}" for s, v in broker.confirmed}


async def test_publish_in_order_takes_messages_as_room_frees_up_and_stops_at_their_error() -> None:
    order = [(f"s{n % 10}", n // 10 + 1) for n in range(100)]
    made: list[str] = []

    def lazily(fail_at: int | None) -> Iterator[Message]:
        for n, message in enumerate(_messages(order)):
            if n == fail_at:
                raise ValueError("mapper failed")
            made.append(message.id)
            yield message

    broker = _Broker()
    sent_before: list[int] = []
    real = broker.publish

    async def publish(messages: Sequence[Message]) -> None:
        sent_before.append(len(made))
        await real(messages)

    await publish_in_order(lazily(None), publish, 8, set())
    assert sorted(broker.confirmed) == sorted(order)
    assert sent_before[0] <= 2 * 8  # the first call went out long before the last was made
    made.clear()
    confirmed: set[str] = set()
    with pytest.raises(ValueError, match="mapper failed"):
        await publish_in_order(lazily(50), _Broker().publish, 8, confirmed)
    assert confirmed and confirmed <= set(made)
