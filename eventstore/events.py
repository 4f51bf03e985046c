"""Events as frozen pydantic models, their registry, upcasters and recorded form."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, Generic, TypeVar

import pydantic
import pydantic_core
from pydantic import BaseModel, ConfigDict

from eventstore.errors import InvalidEventError, UnknownEventTypeError, UpcastError

__all__ = [
    "Event",
    "EventMetadata",
    "EventRegistry",
    "NewEvent",
    "RawRecordedEvent",
    "RecordedEvent",
    "Upcaster",
    "uuid7",
]

E = TypeVar("E", bound="Event")
E_co = TypeVar("E_co", bound="Event", covariant=True)
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# A JSON-escaped NUL (\u0000 after an even number of backslashes): jsonb refuses it.
_JSON_NUL: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class Event(BaseModel):
    """Holds one domain fact: a frozen model with a stable type name and schema version.

    Subclasses declare ``event_type`` (the name stored in the log, never derived from the
    class name, so renaming the class never breaks stored data) and ``schema_version``
    (bumped whenever the shape changes, with an upcaster for the previous version)::

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

    Unknown keys are kept, so applications can add their own.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    tenant: str | None = None
    traceparent: str | None = None


EMPTY_METADATA: Final = EventMetadata()


@dataclasses.dataclass(frozen=True, slots=True)
class NewEvent:
    """Holds an event ready to append: its id, encoded payload and metadata."""

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
    for n in range(count):
        # Same millisecond (or the clock went back): count up in the 12-bit rand_a field.
        _uuid7_seq += 1
        if _uuid7_seq > 0xFFF:
            _last_uuid7_ms, _uuid7_seq = _last_uuid7_ms + 1, 0
        rand_b = int.from_bytes(randomness[8 * n : 8 * n + 8]) & 0x3FFF_FFFF_FFFF_FFFF
        ids.append(
            uuid.UUID(
                int=(_last_uuid7_ms << 80)
                | (0x7 << 76)
                | (_uuid7_seq << 64)
                | (0b10 << 62)
                | rand_b
            )
        )
    return ids


@dataclasses.dataclass(frozen=True, slots=True)
class _Entry:
    cls: type[Event]
    upcasters: dict[int, Upcaster]


class EventRegistry:
    """Maps stored type names to event classes and upgrades old payloads.

    Upcasters transform the stored dict of one schema version into the next; a chain
    brings any old version to the class's current ``schema_version`` before validation.
    """

    def __init__(self, classes: Iterable[type[Event]] = ()) -> None:
        self._entries: dict[str, _Entry] = {}
        self._by_class: dict[type[Event], str] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[E], *, aliases: Iterable[str] = ()) -> type[E]:
        """Registers an event class (usable as a decorator); aliases read old type names."""
        event_type = cls.__dict__.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise InvalidEventError(
                f"{cls.__qualname__} must declare `event_type: ClassVar[str] = '...'` itself"
            )
        if not isinstance(cls.schema_version, int) or cls.schema_version < 1:
            raise InvalidEventError(f"{cls.__qualname__}.schema_version must be an int >= 1")
        names = (event_type, *aliases)
        for name in names:  # check every name before changing anything
            known = self._entries.get(name)
            if known is not None and known.cls is not cls:
                raise InvalidEventError(
                    f"event type {name!r} is already registered to {known.cls.__qualname__}"
                )
        entry = self._entries.get(event_type) or _Entry(cls, {})
        for name in names:  # aliases share the entry, so old names get the same upcasters
            self._entries[name] = entry
        self._by_class[cls] = event_type
        return cls

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Registers a function turning a ``from_version`` dict into ``from_version + 1``."""

        def decorator(fn: Upcaster) -> Upcaster:
            self._entry(event_type).upcasters[from_version] = fn
            return fn

        return decorator

    def add_upcaster(self, event_type: str, from_version: int, fn: Upcaster) -> None:
        """Registers an upcaster without decorator syntax."""
        self.upcaster(event_type, from_version)(fn)

    def class_for(self, event_type: str) -> type[Event]:
        """Returns the class registered for a stored type name."""
        return self._entry(event_type).cls

    def type_name(self, cls: type[Event]) -> str:
        """Returns the stored type name of a registered class."""
        try:
            return self._by_class[cls]
        except KeyError:
            name = getattr(cls, "event_type", cls.__qualname__)
            raise UnknownEventTypeError(str(name)) from None

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._entries

    def _entry(self, event_type: str) -> _Entry:
        try:
            return self._entries[event_type]
        except KeyError:
            raise UnknownEventTypeError(event_type) from None

    def encode(self, event: Event, metadata: str, event_id: uuid.UUID) -> NewEvent:
        """Encodes one event for appending; fails before any write if it cannot."""
        if not isinstance(event, Event):
            raise InvalidEventError(
                f"expected an Event instance, got {type(event).__qualname__}", event=event
            )
        cls = type(event)
        event_type = self.type_name(cls)
        try:  # the serializer itself: model_dump_json's wrapper costs as much again
            data = cls.__pydantic_serializer__.to_json(
                event, by_alias=True, round_trip=True
            ).decode()
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            raise InvalidEventError(f"cannot encode {event_type!r}: {exc}", event=event) from exc
        _refuse_nul(data, event_type, event)
        _refuse_lossy(cls, data, event, event_type)
        return NewEvent(
            event_id=event_id,
            event_type=event_type,
            schema_version=cls.schema_version,
            data=data,
            metadata=metadata,
        )

    def decode(self, event_type: str, schema_version: int, data: str | bytes) -> Event:
        """Decodes a stored payload into its current class, upcasting old versions first."""
        entry = self._entry(event_type)
        cls = entry.cls
        try:
            if schema_version == cls.schema_version:
                return cls.model_validate_json(data)
            payload = json.loads(data)
            return cls.model_validate(self._upcast(entry, event_type, schema_version, payload))
        except pydantic.ValidationError as exc:
            raise InvalidEventError(
                f"stored {event_type!r} v{schema_version} does not validate as "
                f"{cls.__qualname__} v{cls.schema_version}: {exc}"
            ) from exc

    def _upcast(
        self, entry: _Entry, event_type: str, version: int, payload: dict[str, Any]
    ) -> dict[str, Any]:
        target = entry.cls.schema_version
        if version > target:
            raise UpcastError(event_type, version, target, "stored version is newer than code")
        start = version
        while version < target:
            step = entry.upcasters.get(version)
            if step is None:
                raise UpcastError(event_type, start, target, f"no upcaster from v{version}")
            try:
                payload = step(payload)
            except Exception as exc:
                raise UpcastError(event_type, version, version + 1, repr(exc)) from exc
            version += 1
        return payload


def _refuse_nul(data: str, what: str, event: Any = None) -> None:
    if "\\u0000" in data and _JSON_NUL.search(data):
        raise InvalidEventError(
            f"cannot store {what!r}: Postgres jsonb rejects NUL characters", event=event
        )


def _refuse_lossy(cls: type[Event], data: str, event: Event, event_type: str) -> None:
    """Refuses a payload that would not read back equal (NaN, masked secrets, huge ints).

    Such an event would be stored and then be unreadable, or read back changed: checking
    the round trip now is the only way to keep both promises.
    """
    try:
        restored = cls.__pydantic_validator__.validate_json(data)
        # Field values are what matter (BaseModel.__eq__ also compares private state).
        same = restored.__dict__ == event.__dict__
    except (pydantic.ValidationError, ValueError) as exc:
        raise InvalidEventError(
            f"cannot store {event_type!r}: it would not read back ({exc})", event=event
        ) from exc
    if not same:
        raise InvalidEventError(
            f"cannot store {event_type!r}: it would read back changed (NaN, a masked secret, "
            "a serializer that loses data?)",
            event=event,
        )


def encode_metadata(metadata: EventMetadata | Mapping[str, Any] | None) -> str:
    """Encodes metadata to JSON text, validating a plain mapping first."""
    if metadata is None:
        return "{}"
    if not isinstance(metadata, EventMetadata):
        try:
            metadata = EventMetadata.model_validate(metadata)
        except pydantic.ValidationError as exc:
            raise InvalidEventError(f"invalid metadata: {exc}") from exc
    try:
        data = metadata.model_dump_json(exclude_none=True)
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise InvalidEventError(f"cannot encode metadata: {exc}") from exc
    _refuse_nul(data, "metadata")
    return data
