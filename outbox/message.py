"""The message a relay publishes: a CloudEvents 1.0 envelope around an event's payload (pure).

Every message carries the CloudEvents context attributes and this toolkit's extensions:

==================  =========================================================
``specversion``     ``1.0``
``id``              the event id (a UUIDv7): the key to drop duplicates by
``source``          the relay's ``source`` (a URI reference naming the service)
``type``            the event type (``bank.Deposited``), or the mapped public type
``subject``         the stream id (``account-42``), unless the mapping changed it
``time``            when the event was recorded (RFC 3339)
``datacontenttype`` ``application/json``
``partitionkey``    the stream id: messages of one key arrive in version order
``streamversion``   the event's version in its stream (1, 2, ...)
``globalposition``  the event's position in the log
``correlationid``   from the event's metadata, when set
``causationid``     from the event's metadata, when set
``traceparent``     the W3C trace context of the appending request, when set (with
                    tracing on, of the relay's publish span: see `outbox.tracing`)
==================  =========================================================

The body (``data``) is the event's payload as JSON, at its current schema version. Each
publisher carries the attributes in its broker's native headers (see `binary_headers`)
or, for webhooks, in the body itself (`Message.structured`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from pydantic import BaseModel

from eventstore.errors import ConfigurationError, InvalidArgumentError
from eventstore.events import Event, RecordedEvent
from outbox.enqueue import OutboxMessage

__all__ = [
    "JSON",
    "Mapper",
    "Message",
    "binary_headers",
    "message_from_event",
    "message_from_headers",
]

SPEC_VERSION: Final = "1.0"
JSON: Final = "application/json"
# CloudEvents attribute names: lower-case ASCII letters and digits only.
_ATTRIBUTE_NAME: Final = re.compile(r"[a-z0-9]{1,20}")
# Attributes that the Message holds as fields of its own, not as extensions.
_OWN: Final = frozenset(
    {
        "specversion",
        "id",
        "source",
        "type",
        "subject",
        "time",
        "datacontenttype",
        "partitionkey",
        "streamversion",
        "globalposition",
        "correlationid",
        "causationid",
        "traceparent",
        "data",
    }
)
_UNSET: Final[Any] = object()


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    """Holds one outgoing message: CloudEvents attributes, the stream it orders by, the body.

    ``stream_id`` and ``stream_version`` are the event's: the relay publishes the messages
    of one stream in version order whatever the mapping did to ``type`` or ``subject``.
    ``extensions`` are further CloudEvents attributes (lower-case letters and digits).
    """

    id: str
    source: str
    type: str
    subject: str | None
    time: dt.datetime
    data: bytes
    stream_id: str
    stream_version: int
    global_position: int
    datacontenttype: str = JSON
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    extensions: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.extensions:
            if not _ATTRIBUTE_NAME.fullmatch(name) or name in _OWN:
                raise ConfigurationError(
                    f"extension {name!r}: CloudEvents attribute names are 1-20 lower-case "
                    "letters or digits, and not one of the attributes the message sets itself"
                )

    def attributes(self) -> dict[str, str]:
        """Returns the CloudEvents context attributes as strings, extensions included."""
        attributes = {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time.isoformat(),
            "datacontenttype": self.datacontenttype,
            "partitionkey": self.stream_id,
            "streamversion": str(self.stream_version),
            "globalposition": str(self.global_position),
        }
        optional = {
            "subject": self.subject,
            "correlationid": self.correlation_id,
            "causationid": self.causation_id,
            "traceparent": self.traceparent,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        attributes.update(self.extensions)
        return attributes

    def json(self) -> Any:
        """Returns the body decoded from JSON."""
        return json.loads(self.data)

    def structured(self) -> bytes:
        """Returns the message in the CloudEvents JSON format (attributes and data in one).

        A JSON body goes in as ``data``, anything else base64-encoded as ``data_base64``.
        """
        event: dict[str, Any] = dict(self.attributes())
        if _is_json(self.datacontenttype):
            event["data"] = json.loads(self.data)
        else:
            event["data_base64"] = base64.b64encode(self.data).decode()
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_structured(cls, body: bytes | str) -> Message:
        """Reads a message back from the CloudEvents JSON format (`structured`).

        Raises `InvalidArgumentError` if ``body`` is not a message in this format.
        """
        try:
            event = json.loads(body)
        except ValueError as exc:
            raise InvalidArgumentError(f"not a message in this toolkit's envelope: {exc}") from exc
        if not isinstance(event, dict):
            raise InvalidArgumentError("not a message in this toolkit's envelope: not an object")
        if "data_base64" in event:
            data = base64.b64decode(event.pop("data_base64"))
        else:
            data = json.dumps(event.pop("data", None), separators=(",", ":")).encode()
        return _from_attributes({k: str(v) for k, v in event.items()}, data)

    def replace(
        self,
        *,
        type: str | None = None,
        subject: str | None = _UNSET,
        data: Any = _UNSET,
        datacontenttype: str | None = None,
        extensions: Mapping[str, str] | None = None,
    ) -> Message:
        """Returns a copy with another type, subject, body or extensions.

        ``data`` may be bytes (sent as they are), a pydantic model, or anything
        ``json.dumps`` takes.
        """
        changes: dict[str, Any] = {}
        if type is not None:
            changes["type"] = type
        if subject is not _UNSET:
            changes["subject"] = subject
        if data is not _UNSET:
            changes["data"] = encode_data(data)
        if datacontenttype is not None:
            changes["datacontenttype"] = datacontenttype
        if extensions is not None:
            changes["extensions"] = dict(extensions)
        return dataclasses.replace(self, **changes)


Mapper = Callable[[RecordedEvent[Event], Message], "Message | None"]
"""A relay's ``mapper``: gets the recorded event and the message it would send, and returns
the message to send (the same, or a `Message.replace` of it) or None to keep the event in."""


def encode_data(data: Any) -> bytes:
    """Returns a body as bytes: bytes as they are, a model or any JSON value as JSON."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, BaseModel):
        return data.model_dump_json(by_alias=True).encode()
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def message_from_event(event: RecordedEvent[Event], source: str) -> Message:
    """Returns the message an event becomes: its payload as JSON, in the envelope."""
    payload = event.data
    message_type, subject = event.event_type, event.stream_id
    data = payload.model_dump_json(by_alias=True).encode()
    # An enqueued integration message is sent as itself: its type, subject and data.
    if isinstance(payload, OutboxMessage):
        message_type = payload.type
        subject = payload.subject or subject
        data = encode_data(payload.data)
    metadata = event.metadata
    return Message(
        id=str(event.event_id),
        source=source,
        type=message_type,
        subject=subject,
        time=event.recorded_at,
        data=data,
        stream_id=event.stream_id,
        stream_version=event.version,
        global_position=event.global_position,
        correlation_id=metadata.correlation_id,
        causation_id=metadata.causation_id,
        traceparent=metadata.traceparent,
    )


def binary_headers(message: Message, prefix: str) -> dict[str, str]:
    """Returns the attributes as headers named ``prefix + name`` (CloudEvents binary mode).

    ``datacontenttype`` is left out: each broker has a native content type for it. The
    same as `Message.attributes` with the names prefixed, built in one go (it runs for
    every message a relay sends).
    """
    names = _prefixed(prefix)
    headers = {
        names[0]: SPEC_VERSION,
        names[1]: message.id,
        names[2]: message.source,
        names[3]: message.type,
        names[4]: message.time.isoformat(),
        names[5]: message.stream_id,
        names[6]: str(message.stream_version),
        names[7]: str(message.global_position),
    }
    if message.subject is not None:
        headers[names[8]] = message.subject
    if message.correlation_id is not None:
        headers[names[9]] = message.correlation_id
    if message.causation_id is not None:
        headers[names[10]] = message.causation_id
    if message.traceparent is not None:
        headers[names[11]] = message.traceparent
    for name, value in message.extensions.items():
        headers[prefix + name] = value
    return headers


_HEADER_NAMES: Final = (
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "partitionkey",
    "streamversion",
    "globalposition",
    "subject",
    "correlationid",
    "causationid",
    "traceparent",
)


@functools.cache
def _prefixed(prefix: str) -> tuple[str, ...]:
    return tuple(prefix + name for name in _HEADER_NAMES)


def message_from_headers(
    headers: Mapping[str, Any], prefix: str, data: bytes, content_type: str | None
) -> Message:
    """Reads a message back from binary-mode headers (`binary_headers`) and its body."""
    size = len(prefix)
    lowered = prefix.lower()
    attributes = {
        str(k)[size:]: _text(v) for k, v in headers.items() if str(k).lower().startswith(lowered)
    }
    if content_type:
        attributes["datacontenttype"] = content_type
    return _from_attributes(attributes, data)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _from_attributes(attributes: dict[str, str], data: bytes) -> Message:
    attrs = dict(attributes)
    try:
        message = Message(
            id=attrs.pop("id"),
            source=attrs.pop("source"),
            type=attrs.pop("type"),
            subject=attrs.pop("subject", None),
            time=dt.datetime.fromisoformat(attrs.pop("time")),
            data=data,
            stream_id=attrs.pop("partitionkey"),
            stream_version=int(attrs.pop("streamversion")),
            global_position=int(attrs.pop("globalposition")),
            datacontenttype=attrs.pop("datacontenttype", JSON),
            correlation_id=attrs.pop("correlationid", None),
            causation_id=attrs.pop("causationid", None),
            traceparent=attrs.pop("traceparent", None),
        )
    except (KeyError, ValueError) as exc:
        raise InvalidArgumentError(f"not a message in this toolkit's envelope: {exc!r}") from exc
    attrs.pop("specversion", None)
    return dataclasses.replace(message, extensions=attrs) if attrs else message


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or media.endswith("+json")
