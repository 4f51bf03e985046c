"""The registry of event classes: stable type names, upcasters, round-trip-checked encoding."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar

import pydantic
import pydantic_core

from eventstore import _jsonb
from eventstore.errors import (
    ConfigurationError,
    InvalidEventError,
    UnknownEventTypeError,
    UpcastError,
)
from eventstore.events import Event, EventMetadata, NewEvent

__all__ = ["EventRegistry", "Upcaster", "encode_metadata"]

E = TypeVar("E", bound=Event)
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# A JSON-escaped NUL (\u0000 after an even number of backslashes): jsonb refuses it.
_JSON_NUL: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


# A class's type name, whether to look for numbers jsonb prints otherwise, and the test
# that an instance's values need no round trip (None: always do it).
_Encoder = tuple[str, bool, Callable[[dict[str, Any]], bool] | None]


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
        # Per class: its type name, whether jsonb might print its JSON back otherwise, and
        # the test that an instance's values are kept as they are (`_jsonb.exact_fields`).
        self._encoders: dict[type[Event], _Encoder] = {}
        # Stored type name -> (its class's schema version, the class), looked up once per
        # event by the loads' reads (`current_classes`).
        self._current: dict[str, tuple[int, type[Event]]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[E], *, aliases: Iterable[str] = ()) -> type[E]:
        """Registers an event class (usable as a decorator); aliases read old type names."""
        event_type = cls.__dict__.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            raise ConfigurationError(
                f"{cls.__qualname__} must declare `event_type: ClassVar[str] = '...'` itself"
            )
        if type(cls.schema_version) is not int or cls.schema_version < 1:
            raise ConfigurationError(f"{cls.__qualname__}.schema_version must be an int >= 1")
        names = (event_type, *aliases)
        for name in names:  # check every name before changing anything
            known = self._entries.get(name)
            if known is not None and known.cls is not cls:
                raise ConfigurationError(
                    f"event type {name!r} is already registered to {known.cls.__qualname__}"
                )
        entry = self._entries.get(event_type) or _Entry(cls, {})
        for name in names:  # aliases share the entry, so old names get the same upcasters
            self._entries[name] = entry
            self._current[name] = (entry.cls.schema_version, entry.cls)
        self._by_class[cls] = event_type
        self._encoders.pop(cls, None)
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
        cls = type(event)
        encoder = self._encoders.get(cls)
        if encoder is None:
            encoder = self._encoder_for(event)
        event_type, check_numbers, exact = encoder
        try:  # the serializer itself: model_dump_json's wrapper costs as much again
            data = cls.__pydantic_serializer__.to_json(
                event, by_alias=True, round_trip=True
            ).decode()
        except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
            raise InvalidEventError(f"cannot encode {event_type!r}: {exc}", event=event) from exc
        schema_version = cls.schema_version
        if type(schema_version) is not int:  # it is written into the append's JSON
            raise ConfigurationError(f"{cls.__qualname__}.schema_version must be an int")
        if "\\u0000" in data:
            _refuse_nul(data, event_type, event)
        if exact is None or not exact(event.__dict__):
            _refuse_lossy(cls, data, event, event_type, check_numbers)
        return NewEvent(event_id, event_type, schema_version, data, metadata)

    def _encoder_for(self, event: object) -> _Encoder:
        """Returns what encoding a class needs, worked out once per class."""
        if not isinstance(event, Event):
            raise InvalidEventError(
                f"expected an Event instance, got {type(event).__qualname__}", event=event
            )
        cls = type(event)
        encoder = (
            self.type_name(cls),
            _has_ordered(cls) or not _jsonb.numbers_kept(cls),
            _jsonb.exact_fields(cls),
        )
        self._encoders[cls] = encoder
        return encoder

    def current_classes(self) -> Mapping[str, tuple[int, type[Event]]]:
        """Returns, per stored type name, its class's schema version and the class.

        For loops that decode many events: an event stored at that version decodes with
        the class's validator, ``cls.__pydantic_validator__.validate_json(data)``; one that
        fails to validate, or is stored at another version or under an unknown name, goes
        through `decode` for its upcasting or its typed error.
        The mapping is live (a later `register` shows in it); do not change it. A subclass
        that overrides `decode` overrides this too (returning ``{}`` sends every event
        through its `decode`).
        """
        return self._current

    def decode(self, event_type: str, schema_version: int, data: str | bytes) -> Event:
        """Decodes a stored payload into its current class, upcasting old versions first."""
        entry = self._entries.get(event_type)
        if entry is None:
            raise UnknownEventTypeError(event_type)
        cls = entry.cls
        try:
            if schema_version == cls.schema_version:
                # The validator itself: model_validate_json's wrapper costs a sixth as much
                # again, on every event every read decodes.
                return cls.__pydantic_validator__.validate_json(data)  # type: ignore[no-any-return]
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


def _refuse_lossy(
    cls: type[Event], data: str, event: Event, event_type: str, check_numbers: bool = True
) -> None:
    """Refuses a payload that would not read back the same (NaN, masked secrets, huge ints,
    a float jsonb turns into an int, a negative zero, an ordered mapping jsonb reorders).

    The check validates what a read will get (`eventstore._jsonb.as_stored`), not the JSON
    sent, and compares strictly (`eventstore._jsonb.same`: types and ordered keys count).
    Such an event would be stored and then be unreadable, or read back changed: checking
    the round trip now is the only way to keep both promises. ``check_numbers`` False (the
    class can hold no number or ordered mapping jsonb would change) skips looking for one.
    `EventRegistry.encode` skips this whole check for an event whose values pass its
    class's `eventstore._jsonb.exact_fields` test: plain leaf fields holding values of
    exactly their declared types, which can only read back equal.
    """
    try:
        if check_numbers and _jsonb.may_change(data, _has_ordered(cls)):
            data = _jsonb.as_stored(data)
        restored = cls.__pydantic_validator__.validate_json(data)
        # Field values are what matter (BaseModel.__eq__ also compares private state).
        unchanged = _jsonb.same(restored.__dict__, event.__dict__)
    except (pydantic.ValidationError, ValueError) as exc:
        raise InvalidEventError(
            f"cannot store {event_type!r}: it would not read back ({exc})", event=event
        ) from exc
    if not unchanged:
        raise InvalidEventError(
            f"cannot store {event_type!r}: it would read back changed (NaN, a masked secret, "
            "a float jsonb stores as an int, a key order jsonb does not keep, a serializer "
            "that loses data?)",
            event=event,
        )


@functools.cache
def _has_ordered(cls: type[Event]) -> bool:
    """Tells whether a class declares ordered mappings, whose key order jsonb may change."""
    return "OrderedDict" in repr(cls.model_fields)


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
    _refuse_lossy_metadata(metadata, data)
    return data


def _refuse_lossy_metadata(metadata: EventMetadata, data: str) -> None:
    """Refuses metadata that would read back changed (NaN stored as null, say).

    Keys whose value is None are not stored, and read back absent: that is no change.
    """
    try:
        restored = EventMetadata.model_validate_json(_jsonb.as_stored(data))
        unchanged = _jsonb.same(_present(restored.model_dump()), _present(metadata.model_dump()))
    except (pydantic.ValidationError, ValueError) as exc:
        raise InvalidEventError(f"metadata would not read back ({exc})") from exc
    if not unchanged:
        raise InvalidEventError(
            "metadata would read back changed (NaN or infinity, a float jsonb stores as an "
            "int, a key order jsonb does not keep?)"
        )


def _present(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
