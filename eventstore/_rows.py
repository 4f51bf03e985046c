"""Stored rows and their decoding into recorded events (pure)."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

from eventstore.errors import InvalidArgumentError, UnknownEventTypeError
from eventstore.events import EMPTY_METADATA, Event, EventMetadata, RawRecordedEvent, RecordedEvent
from eventstore.registry import EventRegistry

RawRow: TypeAlias = tuple[Any, ...]


def decode_row(registry: EventRegistry, row: RawRow) -> RecordedEvent[Event]:
    """Decodes a stored row into a typed event; raises with the raw record when unknown."""
    position, stream_id, version, event_id, event_type, schema_version, data, meta, at, xid = row
    try:
        payload = registry.decode(event_type, schema_version, data)
    except UnknownEventTypeError as exc:
        raise UnknownEventTypeError(event_type, record=decode_raw_row(row)) from exc
    return RecordedEvent(
        global_position=position,
        stream_id=stream_id,
        version=version,
        event_id=event_id,
        event_type=event_type,
        schema_version=schema_version,
        data=payload,
        metadata=EMPTY_METADATA if meta == "{}" else EventMetadata.model_validate_json(meta),
        recorded_at=at,
        transaction_id=xid,
    )


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
