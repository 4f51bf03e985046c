"""The envelope and the waves, without a database or a broker."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest

from eventstore import ConfigurationError, EventMetadata, InvalidArgumentError, RecordedEvent
from outbox import Message, OutboxMessage, message_from_event
from outbox.message import binary_headers, message_from_headers
from outbox.relay import waves
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


def test_waves_hold_one_message_per_stream_each_in_stream_order() -> None:
    base = message_from_event(recorded(Deposited(amount=1)), "/bank")
    stream = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("c", 1), ("b", 2)]
    messages = [dataclasses.replace(base, stream_id=s, stream_version=v) for s, v in stream]
    assert [[(m.stream_id, m.stream_version) for m in wave] for wave in waves(messages)] == [
        [("a", 1), ("b", 1), ("c", 1)],
        [("a", 2), ("b", 2)],
        [("a", 3)],
    ]
    assert waves([]) == []
