"""Stored rows and their decoding into recorded events (pure)."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import pydantic

from eventstore.errors import InvalidArgumentError, InvalidEventError, UnknownEventTypeError
from eventstore.events import (
    EMPTY_METADATA,
    Event,
    EventMetadata,
    RawRecordedEvent,
    RecordedEvent,
    recorded_event,
)
from eventstore.registry import EventRegistry

RawRow: TypeAlias = tuple[Any, ...]


def decode_row(
    registry: EventRegistry, row: RawRow, of_type: type[Event] | None = None
) -> RecordedEvent[Event]:
    """Decodes a stored row into a typed event; raises with the raw record when unknown.

    With ``of_type``, an event that is not an instance of it raises `InvalidEventError`
    (``event`` holds the decoded `RecordedEvent`).
    """
    position, stream_id, version, event_id, event_type, schema_version, data, meta, at, xid = row
    try:
        payload = registry.decode(event_type, schema_version, data)
    except UnknownEventTypeError as exc:
        raise UnknownEventTypeError(event_type, record=decode_raw_row(row)) from exc
    # Positional, in field order (global_position ... transaction_id), past __init__: this
    # runs for every event every read decodes.
    recorded = recorded_event(
        position,
        stream_id,
        version,
        event_id,
        event_type,
        schema_version,
        payload,
        EMPTY_METADATA if meta == "{}" else _metadata(row),
        at,
        xid,
    )
    if of_type is not None and not isinstance(payload, of_type):
        raise InvalidEventError(
            f"stream {stream_id!r} holds {event_type!r} ({type(payload).__qualname__}) at "
            f"version {version}, which is not a {of_type.__qualname__} (read with of_type=)",
            event=recorded,
        )
    return recorded


def check_event_class(of_type: object) -> type[Event] | None:
    """Validates a read's ``of_type``: None or an `Event` subclass."""
    if of_type is None or (isinstance(of_type, type) and issubclass(of_type, Event)):
        return of_type
    raise InvalidArgumentError(f"of_type must be an Event subclass or None, not {of_type!r}")


def decode_raw_row(row: RawRow) -> RawRecordedEvent:
    """Decodes a stored row without the registry: payload and metadata as dicts."""
    position, stream_id, version, event_id, event_type, schema_version, data, meta, at, xid = row
    return RawRecordedEvent(
        global_position=position,
        stream_id=stream_id,
        version=version,
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        data=json.loads(data),
        metadata=json.loads(meta),
        recorded_at=at,
        transaction_id=xid,
    )


def read_bounds(
    direction: str, from_version: int | None, limit: int | None
) -> tuple[bool, int, int | None]:
    """Validates read arguments; returns (forward, starting version, limit)."""
    if direction not in ("forward", "backward"):
        raise InvalidArgumentError("direction must be 'forward' or 'backward'")
    forward = direction == "forward"
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError("limit must be an int >= 0 or None")
    if from_version is None:
        start = 1 if forward else 2**63 - 1
    elif isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 0:
        raise InvalidArgumentError("from_version must be an int >= 0 or None")
    else:
        start = from_version
    return forward, start, limit


def _metadata(row: RawRow) -> EventMetadata:
    """Decodes a row's metadata; metadata another producer wrote wrong is a typed error."""
    meta = row[7]
    if meta == "{}":
        return EMPTY_METADATA
    try:
        return EventMetadata.model_validate_json(meta)
    except pydantic.ValidationError as exc:
        raise InvalidEventError(
            f"stored metadata of event {row[3]} ({row[1]}@{row[2]}) does not validate: {exc}; "
            "read_stream_raw returns it as stored",
            event=decode_raw_row(row),
        ) from exc
