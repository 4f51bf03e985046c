"""Events as frozen pydantic models, their metadata, and their recorded form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import struct
import threading
import time
import uuid
from typing import Any, ClassVar, Final, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Event",
    "EventMetadata",
    "NewEvent",
    "RawRecordedEvent",
    "RecordedEvent",
    "uuid7",
]

E = TypeVar("E", bound="Event")
E_co = TypeVar("E_co", bound="Event", covariant=True)


class Event(BaseModel):
    """Holds one domain fact: a frozen model with a stable type name and schema version.

    Subclasses declare ``event_type`` (the name stored in the log, never derived from the
    class name, so renaming the class never breaks stored data) and ``schema_version``
    (bumped whenever the shape changes, with an upcaster for the previous version):

        class Deposited(Event):
            event_type: ClassVar[str] = "bank.Deposited"
            schema_version: ClassVar[int] = 2
            amount: int
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1


class EventMetadata(BaseModel):
    """Carries who and what caused an event, for tracing and auditing.

    Unknown keys are kept, so applications can add their own. `message_context` fills
    these fields for the events appended inside its block.

    Attributes:
        correlation_id: The id shared by all the messages and events of one piece of work.
        causation_id: The id of the message or event that caused this one.
        actor: Who acted (a user or service id), as the application names it.
        tenant: The tenant the event belongs to, for multi-tenant applications.
        traceparent: The W3C trace context of the OpenTelemetry span that appended the
            event, added when the ``otel`` extra is installed and a span is current.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    tenant: str | None = None
    traceparent: str | None = None


EMPTY_METADATA: Final = EventMetadata()


class NewEvent(NamedTuple):
    """Holds an event ready to append: its id, encoded payload and metadata.

    A named tuple: built once per appended event, in a third of a frozen dataclass's time.
    """

    event_id: uuid.UUID
    event_type: str
    schema_version: int
    data: str
    metadata: str


@dataclasses.dataclass(frozen=True, slots=True)
class RawRecordedEvent:
    """Holds a stored event as it is in the log, payload decoded to a dict."""

    global_position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    event_type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: dt.datetime
    transaction_id: int


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedEvent(Generic[E_co]):
    """Holds a stored event with its typed payload at the current schema version."""

    global_position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    event_type: str
    schema_version: int
    data: E_co
    metadata: EventMetadata
    recorded_at: dt.datetime
    transaction_id: int


_new_object: Final = object.__new__

# Each field's slot, set directly: the frozen dataclass's __init__ goes through
# object.__setattr__ by name for every field (0.97 us), these calls take 0.53 us.
(
    _set_position,
    _set_stream_id,
    _set_version,
    _set_event_id,
    _set_event_type,
    _set_schema_version,
    _set_data,
    _set_metadata,
    _set_recorded_at,
    _set_transaction_id,
) = [getattr(RecordedEvent, field.name).__set__ for field in dataclasses.fields(RecordedEvent)]


def recorded_event(
    global_position: int,
    stream_id: str,
    version: int,
    event_id: uuid.UUID,
    event_type: str,
    schema_version: int,
    data: Event,
    metadata: EventMetadata,
    recorded_at: dt.datetime,
    transaction_id: int,
) -> RecordedEvent[Event]:
    """Returns ``RecordedEvent(...)`` of these values, built without its ``__init__``.

    Every read decodes every event through here. It sets exactly the slots ``__init__``
    sets (the dataclass has no ``__post_init__``); a unit test compares the two.
    """
    made: RecordedEvent[Event] = _new_object(RecordedEvent)
    _set_position(made, global_position)
    _set_stream_id(made, stream_id)
    _set_version(made, version)
    _set_event_id(made, event_id)
    _set_event_type(made, event_type)
    _set_schema_version(made, schema_version)
    _set_data(made, data)
    _set_metadata(made, metadata)
    _set_recorded_at(made, recorded_at)
    _set_transaction_id(made, transaction_id)
    return made


_last_uuid7_ms = 0
_uuid7_seq = 0
_uuid7_lock = threading.Lock()


def uuid7() -> uuid.UUID:
    """Returns a new time-ordered UUIDv7 (RFC 9562), monotonic within this process.

    Time-ordered ids keep inserts into the unique event id index at its right edge.
    """
    return uuid7_batch(1)[0]


def uuid7_batch(count: int) -> list[uuid.UUID]:
    """Returns ``count`` new UUIDv7s, ascending, with one clock read and one random draw."""
    randomness = os.urandom(8 * count)
    with _uuid7_lock:
        return _uuid7s(count, randomness)


def _uuid7s(count: int, randomness: bytes) -> list[uuid.UUID]:
    global _last_uuid7_ms, _uuid7_seq
    ms = time.time_ns() // 1_000_000
    if ms > _last_uuid7_ms:
        _last_uuid7_ms, _uuid7_seq = ms, -1
    ids = []
    for rand in struct.unpack(f">{count}Q", randomness):
        # Same millisecond (or the clock went back): count up in the 12-bit rand_a field.
        _uuid7_seq += 1
        if _uuid7_seq > 0xFFF:
            _last_uuid7_ms, _uuid7_seq = _last_uuid7_ms + 1, 0
        ids.append(
            _uuid_of((_last_uuid7_ms << 80) | (_uuid7_seq << 64) | _VERSION_7 | (rand & _RAND_B))
        )
    return ids


_VERSION_7: Final = (0x7 << 76) | (0b10 << 62)  # the version and variant bits
_RAND_B: Final = 0x3FFF_FFFF_FFFF_FFFF
_set_slot: Final = object.__setattr__


def _uuid_of(value: int) -> uuid.UUID:
    """Returns ``uuid.UUID(int=value)`` for a value known to be a valid 128-bit UUID.

    The constructor's argument checks cost 1.2 us, this 0.3 us: an append of 100 events
    draws 100 ids. It sets what the constructor sets: the class's two slots, ``int`` and
    ``is_safe`` (a test compares the result with the constructor's).
    """
    made = _new_object(uuid.UUID)
    _set_slot(made, "int", value)
    _set_slot(made, "is_safe", uuid.SafeUUID.unknown)
    return made
