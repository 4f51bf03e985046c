"""Pure logic shared by every store: validation, parameters, results and decoding.

Nothing here performs I/O, so the sync and async shells (and the in-memory store) make the
same decisions from the same code.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeAlias

from eventstore.context import merged_metadata
from eventstore.errors import (
    ConfigurationError,
    DuplicateEventIdError,
    InvalidArgumentError,
    InvalidEventError,
    InvalidStreamIdError,
    UnknownEventTypeError,
    WrongExpectedVersionError,
)
from eventstore.events import (
    EMPTY_METADATA,
    Event,
    EventMetadata,
    EventRegistry,
    NewEvent,
    RawRecordedEvent,
    RecordedEvent,
    encode_metadata,
    uuid7_batch,
)

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendResult",
    "ExpectedVersion",
    "Snapshot",
    "StreamInfo",
    "StreamState",
]

# A btree entry must fit in a third of a page (about 2,700 bytes); the stream id is in two
# indexes, so it is capped well below that, in UTF-8 bytes.
MAX_STREAM_ID_BYTES: Final = 1024
MAX_EVENTS_PER_APPEND: Final = 100_000


class StreamState(enum.Enum):
    """Names an expected stream state that is not an exact version."""

    ANY = "any"
    NO_STREAM = "no stream"
    STREAM_EXISTS = "stream exists"

    def __str__(self) -> str:
        return self.value


ANY: Final = StreamState.ANY
NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS
ExpectedVersion: TypeAlias = int | StreamState


@dataclasses.dataclass(frozen=True, slots=True)
class AppendResult:
    """Describes a committed (or idempotently repeated) append.

    ``transaction_id`` is the Postgres transaction that wrote the events; subscriptions use
    it for read-your-writes waits, which positions alone cannot give soundly.
    """

    stream_id: str
    first_version: int
    last_version: int
    positions: tuple[int, ...]
    transaction_id: int
    event_ids: tuple[uuid.UUID, ...]
    repeated: bool = False

    @property
    def next_expected_version(self) -> int:
        """Returns the expected version for the stream's next append."""
        return self.last_version


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """Describes a stream: whether it exists and its current version (0 when it does not)."""

    stream_id: str
    exists: bool
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """Holds an aggregate's encoded state as of a stream version."""

    stream_id: str
    version: int
    state_type: str
    schema_version: int
    state: str

    def params(self) -> dict[str, Any]:
        """Returns the statement parameters."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class AppendPlan:
    """Holds everything an append sends, validated and encoded before any I/O."""

    stream_id: str
    expected: ExpectedVersion
    events: tuple[NewEvent, ...]
    shard_key: int

    def params(self) -> dict[str, Any]:
        """Returns the statement parameters."""
        return {
            "stream_id": self.stream_id,
            "count": len(self.events),
            "expected": self.expected if isinstance(self.expected, int) else None,
            "shard_key": self.shard_key,
            "first_id": self.events[0].event_id,
            "events": "[" + ",".join([_wire(e) for e in self.events]) + "]",
            "metadata": self.events[0].metadata,
        }

    @property
    def event_ids(self) -> tuple[uuid.UUID, ...]:
        """Returns the ids of the events, in order."""
        return tuple(e.event_id for e in self.events)


def _wire(event: NewEvent) -> str:
    """Returns one event as the append statement reads it (see `eventstore._sql`)."""
    return (
        f'{{"i":"{event.event_id}","t":{_json_string(event.event_type)},'
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


def shard_key(stream_id: str) -> int:
    """Returns a stable, non-negative 31-bit hash of a stream id (same in every process)."""
    return zlib.crc32(stream_id.encode("utf-8")) & 0x7FFF_FFFF


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
    encoded = tuple(registry.encode(e, meta, i) for e, i in zip(batch, ids, strict=True))
    return AppendPlan(stream_id, expected, encoded, shard_key(stream_id))


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
    if len(rows) > 1:
        rows = sorted(rows, key=lambda row: row[1])
    return AppendResult(
        stream_id=plan.stream_id,
        first_version=rows[0][1],
        last_version=rows[-1][1],
        positions=tuple(r[0] for r in rows),
        transaction_id=rows[0][2],
        event_ids=plan.event_ids,
    )


def resolve_refused_append(
    plan: AppendPlan,
    actual_version: int | None,
    found: Iterable[tuple[uuid.UUID, str, int, int, int]],
) -> AppendResult:
    """Decides why a claim was refused: an idempotent repeat (returned) or a conflict (raised).

    ``found`` holds the stored rows ``(event_id, stream_id, version, position, xid)`` of any
    of the plan's event ids.
    """
    by_id = {row[0]: row for row in found}
    if not by_id:
        raise WrongExpectedVersionError(plan.stream_id, plan.expected, actual_version)
    rows = [by_id.get(i) for i in plan.event_ids]
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


def _is_same_append(
    plan: AppendPlan, rows: list[tuple[uuid.UUID, str, int, int, int] | None]
) -> bool:
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
