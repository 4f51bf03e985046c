"""Appends planned before any I/O: validation, encoding, and explaining a refused claim (pure).

Nothing here performs I/O, so the sync and async shells (and the in-memory store) make the
same decisions from the same code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from eventstore.context import merged_metadata
from eventstore.errors import (
    ConfigurationError,
    DuplicateEventIdError,
    InvalidArgumentError,
    InvalidEventError,
    InvalidStreamIdError,
    WrongExpectedVersionError,
)
from eventstore.events import Event, EventMetadata, NewEvent, uuid7_batch
from eventstore.registry import _JSON_NUL, EventRegistry, encode_metadata
from eventstore.sharding import shard_key
from eventstore.store import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AppendResult,
    ExpectedVersion,
    Snapshot,
    StreamState,
)

# A btree entry must fit in a third of a page (about 2,700 bytes); the stream id is in two
# indexes, so it is capped well below that, in UTF-8 bytes.
MAX_STREAM_ID_BYTES: Final = 1024
MAX_EVENTS_PER_APPEND: Final = 100_000
# One append's events travel as one jsonb array; Postgres caps a jsonb value at 256 MB
# (2**28 - 1 bytes). A margin for the array's keys and the server's own representation.
MAX_APPEND_BYTES: Final = 250 * 2**20
_WIRE_OVERHEAD: Final = 128  # the id, type and version around each payload


@dataclasses.dataclass(frozen=True, slots=True)
class AppendPlan:
    """Holds everything an append sends, validated and encoded before any I/O."""

    stream_id: str
    expected: ExpectedVersion
    events: tuple[NewEvent, ...]
    shard_key: int

    def params(self) -> dict[str, Any]:
        """Returns the statement parameters: one event's columns, or all events as JSON."""
        events = self.events
        first = events[0]
        params = {
            "stream_id": self.stream_id,
            "count": len(events),
            "expected": self.expected if type(self.expected) is int else None,
            "shard_key": self.shard_key,
            "first_id": first.event_id,
            "metadata": first.metadata,
        }
        if len(events) == 1:
            params["event_type"] = first.event_type
            params["schema_version"] = first.schema_version
            params["data"] = first.data
        else:
            params["events"] = self.wire()
        return params

    def wire(self) -> str:
        """Returns the events as the JSON array the statements take apart on the server."""
        return "[" + ",".join([_wire(e) for e in self.events]) + "]"

    @property
    def event_ids(self) -> tuple[uuid.UUID, ...]:
        """Returns the ids of the events, in order."""
        return tuple(e.event_id for e in self.events)


def _wire(event: NewEvent) -> str:
    """Returns one event as the append statement reads it (see `eventstore._sql`)."""
    # The id as 32 hex digits (Postgres reads a uuid with or without hyphens): formatting
    # the int costs a third of str(UUID).
    return (
        f'{{"i":"{event.event_id.int:032x}","t":{_json_string(event.event_type)},'
        f'"v":{event.schema_version},"d":{event.data}}}'
    )


@functools.lru_cache(maxsize=4096)
def _json_string(text: str) -> str:
    return json.dumps(text)


def validate_stream_id(stream_id: object) -> str:
    """Returns the stream id if Postgres can store and index it, else raises."""
    if not isinstance(stream_id, str):
        raise InvalidStreamIdError(repr(stream_id), "must be a str")
    if not stream_id:
        raise InvalidStreamIdError(stream_id, "must not be empty")
    if "\x00" in stream_id:
        raise InvalidStreamIdError(stream_id, "must not contain NUL characters")
    try:
        size = len(stream_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidStreamIdError(stream_id, "must be valid unicode (lone surrogate)") from None
    if size > MAX_STREAM_ID_BYTES:
        raise InvalidStreamIdError(
            stream_id, f"is {size} bytes in UTF-8, the limit is {MAX_STREAM_ID_BYTES}"
        )
    return stream_id


def validate_schema(schema: object) -> str:
    """Returns a schema name the store can quote into its statements, else raises."""
    if not isinstance(schema, str) or not schema or len(schema.encode()) > 63:
        raise ConfigurationError("schema must be a non-empty name of at most 63 bytes")
    if "%" in schema or "\x00" in schema:
        # `%` would be read as a parameter placeholder inside the rendered statements.
        raise ConfigurationError(f"schema name {schema!r} must not contain '%' or NUL")
    return schema


def validate_expected(expected: object) -> ExpectedVersion:
    """Returns a valid expected version; exact 0 means the stream must not exist yet."""
    if isinstance(expected, StreamState):
        return NO_STREAM if expected is NO_STREAM else expected
    if isinstance(expected, bool) or not isinstance(expected, int) or expected < 0:
        raise InvalidArgumentError(
            f"expected_version must be ANY, NO_STREAM, STREAM_EXISTS or an int >= 0, "
            f"not {expected!r}"
        )
    return NO_STREAM if expected == 0 else expected


def plan_append(
    registry: EventRegistry,
    stream_id: str,
    events: Sequence[Event] | Event,
    expected: object,
    metadata: EventMetadata | Mapping[str, Any] | None,
    event_ids: Sequence[uuid.UUID] | None,
) -> AppendPlan:
    """Validates and encodes an append; raises before any I/O when anything is wrong."""
    stream_id = validate_stream_id(stream_id)
    expected = validate_expected(expected)
    batch = [events] if isinstance(events, Event) else _event_list(events)
    if not batch:
        raise InvalidEventError("an append needs at least one event")
    if len(batch) > MAX_EVENTS_PER_APPEND:
        raise InvalidEventError(f"at most {MAX_EVENTS_PER_APPEND} events per append")
    ids = _check_ids(event_ids, len(batch))
    meta = encode_metadata(merged_metadata(metadata))
    encode = registry.encode
    if len(batch) == 1:
        encoded: tuple[NewEvent, ...] = (encode(batch[0], meta, ids[0]),)
    else:
        encoded = tuple([encode(e, meta, i) for e, i in zip(batch, ids, strict=True)])
    _check_size(encoded)
    return AppendPlan(stream_id, expected, encoded, shard_key(stream_id))


def _check_size(encoded: Sequence[NewEvent]) -> None:
    """Refuses, before any I/O, an append larger than one jsonb value can hold.

    The events travel as one jsonb array, and Postgres caps a jsonb value at 256 MB: a
    larger append would fail on the server after seconds of work, with a driver error.
    """
    if len(encoded) == 1:
        chars = len(encoded[0].data) + _WIRE_OVERHEAD
    else:
        chars = sum([len(e.data) for e in encoded]) + _WIRE_OVERHEAD * len(encoded)
    if chars * 4 < MAX_APPEND_BYTES:  # even all 4-byte UTF-8 would fit: no need to count
        return
    size = sum(len(e.data.encode()) for e in encoded) + _WIRE_OVERHEAD * len(encoded)
    if size > MAX_APPEND_BYTES:
        raise InvalidEventError(
            f"this append is {size / 2**20:,.1f} MiB of JSON; one append carries at most "
            f"{MAX_APPEND_BYTES / 2**20:,.0f} MiB (Postgres caps a jsonb value at 256 MB): "
            "split it into several appends in one transaction"
        )


def _event_list(events: object) -> list[Event]:
    if isinstance(events, Mapping | str | bytes) or not isinstance(events, Iterable):
        raise InvalidEventError("events must be an Event or a sequence of Events", event=events)
    return list(events)


def _check_ids(event_ids: Sequence[uuid.UUID] | None, count: int) -> list[uuid.UUID]:
    if event_ids is None:
        return uuid7_batch(count)
    ids = list(event_ids)
    if len(ids) != count:
        raise InvalidEventError(f"got {len(ids)} event ids for {count} events")
    if not all(isinstance(i, uuid.UUID) for i in ids):
        raise InvalidEventError("event ids must be uuid.UUID instances")
    if len(set(ids)) != count:
        raise InvalidEventError("event ids within one append must be distinct")
    return list(ids)


def result_from_rows(plan: AppendPlan, rows: Sequence[tuple[int, int, int]]) -> AppendResult:
    """Builds the result of a successful append from its returned rows (in any order)."""
    if len(rows) == 1:
        ((position, version, transaction_id),) = rows
        return AppendResult(
            plan.stream_id,
            version,
            version,
            (position,),
            transaction_id,
            (plan.events[0].event_id,),
        )
    rows = sorted(rows, key=lambda row: row[1])
    return AppendResult(
        stream_id=plan.stream_id,
        first_version=rows[0][1],
        last_version=rows[-1][1],
        positions=tuple(r[0] for r in rows),
        transaction_id=rows[0][2],
        event_ids=plan.event_ids,
    )


Found = tuple[uuid.UUID, str, int, int, int, bool]


def resolve_refused_append(
    plan: AppendPlan,
    actual_version: int | None,
    found: Iterable[Found],
) -> AppendResult:
    """Decides why a claim was refused: an idempotent repeat (returned) or a conflict (raised).

    ``found`` holds the stored rows ``(event_id, stream_id, version, position, xid,
    same_content)`` of any of the plan's event ids; ``same_content`` tells whether the
    stored event has the type, schema version and payload sent now.
    """
    by_id = {row[0]: row for row in found}
    if not by_id:
        raise WrongExpectedVersionError(plan.stream_id, plan.expected, actual_version)
    rows = [by_id.get(i) for i in plan.event_ids]
    if _is_same_append(plan, rows) and not all(r[5] for r in rows):  # type: ignore[index]
        raise DuplicateEventIdError(
            plan.stream_id,
            sorted(by_id, key=str),
            reason="were appended before with another payload: reusing an idempotency key "
            "for other content is refused, not silently ignored",
        )
    if _is_same_append(plan, rows):
        return AppendResult(
            stream_id=plan.stream_id,
            first_version=rows[0][2],  # type: ignore[index]
            last_version=rows[-1][2],  # type: ignore[index]
            positions=tuple(r[3] for r in rows),  # type: ignore[index]
            transaction_id=rows[0][4],  # type: ignore[index]
            event_ids=plan.event_ids,
            repeated=True,
        )
    raise DuplicateEventIdError(plan.stream_id, sorted(by_id, key=str))


def _is_same_append(plan: AppendPlan, rows: list[Found | None]) -> bool:
    if any(r is None or r[1] != plan.stream_id for r in rows):
        return False
    if len({r[4] for r in rows}) != 1:  # type: ignore[index]
        return False  # written by several appends
    first = rows[0][2]  # type: ignore[index]
    if any(r[2] != first + n for n, r in enumerate(rows)):  # type: ignore[index]
        return False
    if plan.expected is NO_STREAM:
        return first == 1
    if isinstance(plan.expected, int):
        return first == plan.expected + 1
    return True


def claim_matches(expected: ExpectedVersion, actual: int | None) -> bool:
    """Tells whether a stream at ``actual`` (None: absent) satisfies ``expected``."""
    if expected is ANY:
        return True
    if expected is NO_STREAM:
        return actual is None
    if expected is STREAM_EXISTS:
        return actual is not None
    return actual == expected


def validate_snapshot(snapshot: object) -> Snapshot:
    """Returns a snapshot every store can keep and load back, else raises.

    Its stream id must be storable (as in every other operation), its version at least 1
    (a snapshot of version 0 holds no event, and loading would apply every event on top of
    it), its ``event_id`` a UUID (the event it was taken at), and its state JSON text
    without NUL characters (Postgres's jsonb refuses them).
    """
    if not isinstance(snapshot, Snapshot):
        raise InvalidArgumentError(f"expected a Snapshot, got {type(snapshot).__qualname__}")
    validate_stream_id(snapshot.stream_id)
    version = snapshot.version
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidArgumentError(f"snapshot version must be an int >= 1, not {version!r}")
    if not isinstance(snapshot.event_id, uuid.UUID):
        raise InvalidArgumentError(
            f"snapshot event_id must be the UUID of the event at its version, "
            f"not {snapshot.event_id!r}"
        )
    if not isinstance(snapshot.state, str):
        raise InvalidArgumentError("snapshot state must be JSON text")
    try:
        json.loads(snapshot.state)
    except ValueError as exc:
        raise InvalidArgumentError(f"snapshot state is not JSON: {exc}") from exc
    if "\x00" in snapshot.state or _JSON_NUL.search(snapshot.state):
        raise InvalidArgumentError("snapshot state must not contain NUL characters (jsonb)")
    return snapshot
