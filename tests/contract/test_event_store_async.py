"""The event store contract: what every implementation promises, checked on each of them.

Written async; `test_event_store.py` is generated from it (see `tests/contract/conftest.py`
for how each half gets its stores).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import pydantic
import pytest

from eventstore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    AsyncEventStore,
    ConcurrencyError,
    DuplicateEventIdError,
    Event,
    EventMetadata,
    EventRegistry,
    ExpectedVersion,
    InvalidArgumentError,
    InvalidEventError,
    InvalidStreamIdError,
    RecordedEvent,
    Snapshot,
    UnknownEventTypeError,
    UpcastError,
    WrongExpectedVersionError,
)
from tests.support import Deposited, Opened, Renamed, make_registry

NewStore = Callable[[EventRegistry], AsyncEventStore]


def dep(amount: int) -> Deposited:
    return Deposited(amount=amount, currency="EUR")


async def events_of(
    store: AsyncEventStore, stream_id: str, **kwargs: Any
) -> list[RecordedEvent[Event]]:
    return [e async for e in store.read_stream(stream_id, **kwargs)]


async def versions_of(store: AsyncEventStore, stream_id: str, **kwargs: Any) -> list[int]:
    return [e.version async for e in store.read_stream(stream_id, **kwargs)]


# --- Appending and reading back ------------------------------------------------------------


async def test_append_then_read_returns_typed_events_in_order(store: AsyncEventStore) -> None:
    result = await store.append("acc-1", [Opened(owner="ann"), dep(5), dep(7)])
    assert (result.stream_id, result.first_version, result.last_version) == ("acc-1", 1, 3)
    assert result.next_expected_version == 3
    assert not result.repeated
    assert list(result.positions) == sorted(result.positions)
    events = await events_of(store, "acc-1")
    assert [e.data for e in events] == [Opened(owner="ann"), dep(5), dep(7)]
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.event_type for e in events] == ["test.Opened", "test.Deposited", "test.Deposited"]
    assert {e.stream_id for e in events} == {"acc-1"}
    assert [e.global_position for e in events] == list(result.positions)
    assert [e.event_id for e in events] == list(result.event_ids)
    assert {e.transaction_id for e in events} == {result.transaction_id}


async def test_events_of_one_append_share_an_aware_recording_time(store: AsyncEventStore) -> None:
    await store.append("acc-1", [dep(1), dep(2)])
    first, second = await events_of(store, "acc-1")
    assert first.recorded_at == second.recorded_at
    assert first.recorded_at.utcoffset() is not None


async def test_a_single_event_can_be_appended_without_a_list(store: AsyncEventStore) -> None:
    result = await store.append("acc-1", dep(1))
    assert (result.first_version, result.last_version) == (1, 1)
    assert [e.data for e in await events_of(store, "acc-1")] == [dep(1)]


async def test_global_positions_increase_across_streams(store: AsyncEventStore) -> None:
    a = await store.append("acc-1", dep(1))
    b = await store.append("acc-2", [dep(2), dep(3)])
    c = await store.append("acc-1", dep(4))
    assert a.positions[0] < b.positions[0] < b.positions[1] < c.positions[0]
    assert len({a.transaction_id, b.transaction_id, c.transaction_id}) == 3


async def test_given_event_ids_are_stored(store: AsyncEventStore) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    result = await store.append("acc-1", [dep(1), dep(2)], event_ids=ids)
    assert list(result.event_ids) == ids
    assert [e.event_id for e in await events_of(store, "acc-1")] == ids


# --- Expected versions ---------------------------------------------------------------------


async def test_any_appends_whatever_the_stream_state(store: AsyncEventStore) -> None:
    assert (await store.append("acc-1", dep(1), expected_version=ANY)).last_version == 1
    assert (await store.append("acc-1", dep(2), expected_version=ANY)).last_version == 2


async def test_no_stream_creates_a_stream_only_once(store: AsyncEventStore) -> None:
    assert (await store.append("acc-1", dep(1), expected_version=NO_STREAM)).last_version == 1
    with pytest.raises(WrongExpectedVersionError):
        await store.append("acc-1", dep(2), expected_version=NO_STREAM)
    assert (await store.stream_info("acc-1")).version == 1


async def test_exact_version_zero_means_no_stream(store: AsyncEventStore) -> None:
    await store.append("acc-1", dep(1), expected_version=0)
    with pytest.raises(WrongExpectedVersionError) as info:
        await store.append("acc-1", dep(1), expected_version=0)
    assert info.value.expected is NO_STREAM


async def test_stream_exists_appends_only_to_an_existing_stream(store: AsyncEventStore) -> None:
    with pytest.raises(WrongExpectedVersionError):
        await store.append("acc-1", dep(1), expected_version=STREAM_EXISTS)
    assert not (await store.stream_info("acc-1")).exists
    await store.append("acc-1", dep(1))
    result = await store.append("acc-1", dep(2), expected_version=STREAM_EXISTS)
    assert result.last_version == 2


async def test_exact_expected_version_appends_when_it_matches(store: AsyncEventStore) -> None:
    first = await store.append("acc-1", dep(1), expected_version=NO_STREAM)
    result = await store.append("acc-1", dep(2), expected_version=first.next_expected_version)
    assert (result.first_version, result.last_version) == (2, 2)


async def test_exact_expected_version_rejects_a_missing_stream(store: AsyncEventStore) -> None:
    with pytest.raises(WrongExpectedVersionError):
        await store.append("acc-1", dep(1), expected_version=3)
    assert not (await store.stream_info("acc-1")).exists


async def test_append_rejects_stale_expected_version(store: AsyncEventStore) -> None:
    await store.append("acc-1", [dep(1), dep(2)])
    with pytest.raises(WrongExpectedVersionError):
        await store.append("acc-1", dep(3), expected_version=1)
    assert (await store.stream_info("acc-1")).version == 2
    assert [e.data for e in await events_of(store, "acc-1")] == [dep(1), dep(2)]


@pytest.mark.parametrize(
    ("existing", "expected", "actual"),
    [(2, NO_STREAM, 2), (2, 1, 2), (2, 3, 2), (0, STREAM_EXISTS, None), (0, 3, None)],
    ids=["no-stream", "stale", "ahead", "stream-exists", "exact-on-missing"],
)
async def test_a_refused_append_names_the_stream_the_claim_and_the_actual_version(
    store: AsyncEventStore, existing: int, expected: ExpectedVersion, actual: int | None
) -> None:
    if existing:
        await store.append("acc-1", [dep(n) for n in range(existing)])
    with pytest.raises(WrongExpectedVersionError) as info:
        await store.append("acc-1", dep(9), expected_version=expected)
    error = info.value
    assert (error.stream_id, error.expected, error.actual) == ("acc-1", expected, actual)
    assert isinstance(error, ConcurrencyError)
    assert "acc-1" in str(error)


@pytest.mark.parametrize("bad", [-1, "1", True, 1.5, None])
async def test_invalid_expected_version_is_rejected(store: AsyncEventStore, bad: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.append("acc-1", dep(1), expected_version=bad)
    assert not (await store.stream_info("acc-1")).exists


# --- Idempotent repeats and duplicate ids --------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [(0, NO_STREAM), (0, 0), (0, ANY), (2, ANY), (2, STREAM_EXISTS), (2, 2)],
    ids=["no-stream", "zero", "any-new", "any", "stream-exists", "exact"],
)
@pytest.mark.parametrize("count", [1, 2], ids=["one-event", "two-events"])
async def test_retrying_an_append_returns_the_original_result(
    store: AsyncEventStore, existing: int, expected: ExpectedVersion, count: int
) -> None:
    if existing:
        await store.append("acc-1", [dep(n) for n in range(existing)])
    ids = [uuid.uuid4() for _ in range(count)]
    events = [dep(n + 1) for n in range(count)]
    first = await store.append("acc-1", events, expected_version=expected, event_ids=ids)
    again = await store.append("acc-1", events, expected_version=expected, event_ids=ids)
    assert again.repeated and not first.repeated
    assert (again.first_version, again.last_version) == (existing + 1, existing + count)
    assert (again.positions, again.transaction_id, again.event_ids) == (
        first.positions,
        first.transaction_id,
        first.event_ids,
    )
    assert (await store.stream_info("acc-1")).version == existing + count


async def test_retrying_after_later_appends_still_returns_the_original_result(
    store: AsyncEventStore,
) -> None:
    ids = [uuid.uuid4()]
    await store.append("acc-1", dep(1))
    first = await store.append("acc-1", dep(2), expected_version=1, event_ids=ids)
    await store.append("acc-1", dep(3), expected_version=2)
    again = await store.append("acc-1", dep(2), expected_version=1, event_ids=ids)
    assert again.repeated
    assert (again.positions, again.last_version) == (first.positions, 2)
    assert (await store.stream_info("acc-1")).version == 3


async def test_reusing_an_event_id_elsewhere_is_an_error(store: AsyncEventStore) -> None:
    event_id = uuid.uuid4()
    await store.append("acc-1", dep(1), event_ids=[event_id])
    with pytest.raises(DuplicateEventIdError) as info:
        await store.append("acc-2", dep(1), event_ids=[event_id])
    assert (info.value.stream_id, info.value.event_ids) == ("acc-2", [event_id])
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-1", [dep(1), dep(2)], event_ids=[event_id, uuid.uuid4()])
    assert not (await store.stream_info("acc-2")).exists
    assert (await store.stream_info("acc-1")).version == 1


async def test_an_id_reused_in_a_later_position_is_refused_and_nothing_is_written(
    store: AsyncEventStore,
) -> None:
    taken = uuid.uuid4()
    await store.append("acc-1", dep(1), event_ids=[taken])
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-2", [dep(1), dep(2)], event_ids=[uuid.uuid4(), taken])
    assert not (await store.stream_info("acc-2")).exists
    assert (await store.append("acc-2", dep(3))).last_version == 1


async def test_a_retry_with_the_same_ids_but_another_payload_is_refused_loudly(
    store: AsyncEventStore,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    first = await store.append(
        "acc-1", [dep(1), dep(2)], expected_version=NO_STREAM, event_ids=[a, b]
    )
    with pytest.raises(DuplicateEventIdError, match="another payload"):
        await store.append("acc-1", [dep(1), dep(3)], expected_version=NO_STREAM, event_ids=[a, b])
    again = await store.append(
        "acc-1", [dep(1), dep(2)], expected_version=NO_STREAM, event_ids=[a, b]
    )
    assert again.repeated and again.positions == first.positions
    assert (await store.stream_info("acc-1")).version == 2


async def test_retrying_part_of_an_append_is_not_a_repeat(store: AsyncEventStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.append("acc-1", [dep(1), dep(2)], expected_version=NO_STREAM, event_ids=[a, b])
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-1", dep(1), expected_version=NO_STREAM, event_ids=[a])
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-1", dep(2), expected_version=1, event_ids=[b])
    assert (await store.stream_info("acc-1")).version == 2


async def test_retrying_two_appends_as_one_is_not_a_repeat(store: AsyncEventStore) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.append("acc-1", dep(1), expected_version=NO_STREAM, event_ids=[a])
    await store.append("acc-1", dep(2), expected_version=1, event_ids=[b])
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-1", [dep(1), dep(2)], expected_version=NO_STREAM, event_ids=[a, b])
    assert (await store.stream_info("acc-1")).version == 2


async def test_retrying_with_the_ids_in_another_order_is_not_a_repeat(
    store: AsyncEventStore,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    await store.append("acc-1", [dep(1), dep(2)], event_ids=[a, b])
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-1", [dep(2), dep(1)], event_ids=[b, a])
    assert (await store.stream_info("acc-1")).version == 2


async def test_retrying_at_another_expected_version_is_not_a_repeat(
    store: AsyncEventStore,
) -> None:
    ids = [uuid.uuid4()]
    await store.append("acc-1", dep(1), expected_version=NO_STREAM, event_ids=ids)
    await store.append("acc-1", dep(2))
    with pytest.raises(DuplicateEventIdError):
        await store.append("acc-1", dep(1), expected_version=2, event_ids=ids)
    assert (await store.stream_info("acc-1")).version == 2


# --- Refusing what cannot be stored --------------------------------------------------------


async def test_invalid_payload_fails_before_anything_is_written(store: AsyncEventStore) -> None:
    bad = Deposited.model_construct(amount=float("nan"), currency=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidEventError):
        await store.append("acc-1", [dep(1), bad])
    with pytest.raises(InvalidEventError):
        await store.append("acc-1", [dep(1), {"amount": 1}])  # type: ignore[list-item]
    with pytest.raises(InvalidEventError):
        await store.append("acc-1", Renamed(name="nul \x00 inside"))
    with pytest.raises(InvalidEventError):
        await store.append("acc-1", [])
    assert not (await store.stream_info("acc-1")).exists
    assert await events_of(store, "acc-1") == []


async def test_a_mapping_is_not_a_list_of_events(store: AsyncEventStore) -> None:
    with pytest.raises(InvalidEventError):
        await store.append("acc-1", {"amount": 1})  # type: ignore[arg-type]
    assert not (await store.stream_info("acc-1")).exists


async def test_unregistered_event_class_is_rejected_on_write(store: AsyncEventStore) -> None:
    from tests.unit.test_events import Unregistered

    with pytest.raises(UnknownEventTypeError) as info:
        await store.append("acc-1", Unregistered(x=1))
    assert info.value.event_type == "test.Unregistered"
    assert not (await store.stream_info("acc-1")).exists


class Measured(Event):
    event_type: ClassVar[str] = "test.Measured"
    value: float


class Login(Event):
    event_type: ClassVar[str] = "test.Login"
    token: pydantic.SecretStr


@pytest.mark.parametrize(
    "event",
    [Measured(value=float("nan")), Login(token=pydantic.SecretStr("hunter2"))],
    ids=["nan", "secret"],
)
async def test_payloads_that_would_not_read_back_are_refused(
    new_store: NewStore, event: Event
) -> None:
    store = new_store(EventRegistry([Measured, Login]))
    with pytest.raises(InvalidEventError, match="read back"):
        await store.append("s", event)
    assert not (await store.stream_info("s")).exists


@pytest.mark.parametrize(
    "event_ids",
    [[uuid.uuid4()], [uuid.UUID(int=1), uuid.UUID(int=1)], ["not-a-uuid", uuid.uuid4()]],
    ids=["too-few", "repeated", "not-uuids"],
)
async def test_event_ids_must_be_distinct_uuids_one_per_event(
    store: AsyncEventStore, event_ids: list[Any]
) -> None:
    with pytest.raises(InvalidEventError):
        await store.append("acc-1", [dep(1), dep(2)], event_ids=event_ids)
    assert not (await store.stream_info("acc-1")).exists


async def test_nul_in_metadata_is_refused(store: AsyncEventStore) -> None:
    with pytest.raises(InvalidEventError, match="NUL"):
        await store.append("acc-1", dep(1), metadata={"actor": "a\x00b"})
    assert not (await store.stream_info("acc-1")).exists


# --- Metadata ------------------------------------------------------------------------------


async def test_metadata_round_trips(store: AsyncEventStore) -> None:
    meta = EventMetadata(
        correlation_id="c-1",
        causation_id="c-0",
        actor="ann",
        tenant="t1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        custom="kept",
    )
    await store.append("acc-1", dep(1), metadata=meta)
    await store.append("acc-1", dep(2), metadata={"actor": "bob"})
    await store.append("acc-1", dep(3))
    first, second, third = await events_of(store, "acc-1")
    assert first.metadata == meta
    assert first.metadata.model_extra == {"custom": "kept"}
    assert second.metadata == EventMetadata(actor="bob")
    assert third.metadata == EventMetadata()
    raw = [r.metadata async for r in store.read_stream_raw("acc-1")]
    assert raw[1:] == [{"actor": "bob"}, {}]


# --- Reading -------------------------------------------------------------------------------


async def test_reads_go_forward_from_a_version_with_a_limit(store: AsyncEventStore) -> None:
    await store.append("acc-1", [dep(i) for i in range(1, 11)])
    assert await versions_of(store, "acc-1", from_version=8) == [8, 9, 10]
    assert await versions_of(store, "acc-1", from_version=3, limit=2) == [3, 4]
    assert await versions_of(store, "acc-1", limit=2) == [1, 2]
    assert await versions_of(store, "acc-1", from_version=0, limit=1) == [1]


async def test_reads_go_backward_from_the_end_or_from_a_version(store: AsyncEventStore) -> None:
    await store.append("acc-1", [dep(i) for i in range(1, 11)])
    assert await versions_of(store, "acc-1", direction="backward", limit=3) == [10, 9, 8]
    assert await versions_of(store, "acc-1", direction="backward", from_version=4) == [4, 3, 2, 1]
    backward = await events_of(store, "acc-1", direction="backward", from_version=7, limit=2)
    assert [e.data for e in backward] == [dep(7), dep(6)]


async def test_reads_outside_the_stream_return_nothing(store: AsyncEventStore) -> None:
    await store.append("acc-1", [dep(1), dep(2)])
    assert await versions_of(store, "acc-1", limit=0) == []
    assert await versions_of(store, "acc-1", from_version=3) == []
    assert await versions_of(store, "acc-1", direction="backward", from_version=0) == []
    assert await versions_of(store, "missing") == []
    assert [r async for r in store.read_stream_raw("missing")] == []


async def test_reads_see_the_stream_as_it_is_when_iteration_starts(
    store: AsyncEventStore,
) -> None:
    await store.append("acc-1", Opened(owner="ann"))
    events = store.read_stream("acc-1")
    await store.append("acc-1", dep(1))
    assert [e.version async for e in events] == [1, 2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"direction": "sideways"},
        {"limit": -1},
        {"limit": "10"},
        {"limit": True},
        {"from_version": -3},
        {"from_version": "1"},
    ],
    ids=["direction", "negative-limit", "str-limit", "bool-limit", "negative-from", "str-from"],
)
async def test_bad_read_arguments_fail_at_the_call(
    store: AsyncEventStore, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(InvalidArgumentError):
        store.read_stream("acc-1", **kwargs)  # no iteration needed
    with pytest.raises(InvalidArgumentError):
        store.read_stream_raw("acc-1", **kwargs)
    if "direction" not in kwargs and "limit" not in kwargs:
        with pytest.raises(InvalidArgumentError):
            store.read_stream_data("acc-1", **kwargs)


async def test_read_stream_raw_returns_events_as_stored(store: AsyncEventStore) -> None:
    result = await store.append("acc-1", [Opened(owner="ann"), dep(5)], metadata={"actor": "x"})
    raw = [r async for r in store.read_stream_raw("acc-1")]
    typed = await events_of(store, "acc-1")
    assert [r.data for r in raw] == [
        {"owner": "ann"},
        {"amount": 5, "currency": "EUR", "note": ""},
    ]
    assert [(r.event_type, r.schema_version) for r in raw] == [
        ("test.Opened", 1),
        ("test.Deposited", 3),
    ]
    assert [r.metadata for r in raw] == [{"actor": "x"}, {"actor": "x"}]
    assert [(r.global_position, r.version, r.event_id) for r in raw] == [
        (e.global_position, e.version, e.event_id) for e in typed
    ]
    assert {(r.stream_id, r.transaction_id, r.recorded_at) for r in raw} == {
        ("acc-1", result.transaction_id, typed[0].recorded_at)
    }


async def test_read_stream_raw_goes_backward_with_a_limit(store: AsyncEventStore) -> None:
    await store.append("acc-1", [dep(i) for i in range(1, 6)])
    raw = [r async for r in store.read_stream_raw("acc-1", direction="backward", limit=2)]
    assert [(r.version, r.data["amount"]) for r in raw] == [(5, 5), (4, 4)]
    forward = [r.version async for r in store.read_stream_raw("acc-1", from_version=4)]
    assert forward == [4, 5]


async def test_read_stream_data_yields_versions_and_typed_events(store: AsyncEventStore) -> None:
    await store.append("acc-1", [Opened(owner="ann"), dep(5), dep(7)])
    data = [pair async for pair in store.read_stream_data("acc-1", from_version=2)]
    assert data == [(2, dep(5)), (3, dep(7))]
    everything = [pair async for pair in store.read_stream_data("acc-1")]
    assert everything == [(1, Opened(owner="ann")), (2, dep(5)), (3, dep(7))]
    assert [pair async for pair in store.read_stream_data("missing")] == []


# --- Streams -------------------------------------------------------------------------------


async def test_stream_info_reports_missing_and_existing_streams(store: AsyncEventStore) -> None:
    info = await store.stream_info("acc-1")
    assert (info.stream_id, info.exists, info.version) == ("acc-1", False, 0)
    await store.append("acc-1", [dep(1), dep(2)])
    info = await store.stream_info("acc-1")
    assert (info.stream_id, info.exists, info.version) == ("acc-1", True, 2)
    assert not (await store.stream_info("acc-2")).exists


HOSTILE_IDS = [
    "it's",
    'say "hi"',
    "back\\slash\\",
    "%(stream_id)s",
    "'; DROP TABLE eventstore.events; --",
    "ünïcødé-流-🙂",
    "line\nbreak\ttab",
    "x" * 1024,
]


@pytest.mark.parametrize("stream_id", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
async def test_hostile_stream_ids_are_stored_exactly(
    store: AsyncEventStore, stream_id: str
) -> None:
    await store.append(stream_id, dep(1))
    (event,) = await events_of(store, stream_id)
    assert event.stream_id == stream_id
    assert (await store.stream_info(stream_id)).version == 1


UNSTORABLE_IDS = [
    ("", "empty"),
    ("x" * 10_000, "limit"),
    ("流" * 400, "limit"),
    ("nul\x00", "NUL"),
    ("\ud800", "surrogate"),
]


@pytest.mark.parametrize(
    ("stream_id", "reason"),
    UNSTORABLE_IDS,
    ids=[reason for _, reason in UNSTORABLE_IDS],
)
async def test_unstorable_stream_ids_are_rejected_clearly(
    store: AsyncEventStore, stream_id: str, reason: str
) -> None:
    with pytest.raises(InvalidStreamIdError, match=reason) as info:
        await store.append(stream_id, dep(1))
    assert info.value.stream_id == stream_id


@pytest.mark.parametrize("stream_id", ["", "nul\x00", "x" * 1025])
async def test_every_stream_operation_rejects_an_unstorable_stream_id(
    store: AsyncEventStore, stream_id: str
) -> None:
    with pytest.raises(InvalidStreamIdError):
        await store.stream_info(stream_id)
    with pytest.raises(InvalidStreamIdError):
        store.read_stream(stream_id)
    with pytest.raises(InvalidStreamIdError):
        store.read_stream_raw(stream_id)
    with pytest.raises(InvalidStreamIdError):
        store.read_stream_data(stream_id)
    with pytest.raises(InvalidStreamIdError):
        await store.load_snapshot(stream_id)
    with pytest.raises(InvalidStreamIdError):
        await store.delete_snapshot(stream_id)
    with pytest.raises(InvalidStreamIdError):
        await store.save_snapshot(snapshot(1, stream_id=stream_id))


# --- Snapshots -----------------------------------------------------------------------------


def snapshot(
    version: int, balance: int = 0, stream_id: str = "acc-1", event_id: uuid.UUID | None = None
) -> Snapshot:
    """A snapshot bound to ``event_id`` (a fresh id, bound to nothing stored, by default)."""
    state = json.dumps({"id": "1", "balance": balance})
    return Snapshot(stream_id, version, "Account", 1, state, event_id or uuid.uuid4())


async def stored_snapshot(
    store: AsyncEventStore, version: int, balance: int = 0, stream_id: str = "acc-1"
) -> Snapshot:
    """Appends up to ``version`` and returns a snapshot bound to the event there."""
    have = (await store.stream_info(stream_id)).version
    if have < version:
        await store.append(stream_id, [dep(n) for n in range(have, version)])
    at = [e async for e in store.read_stream(stream_id, from_version=version, limit=1)]
    return snapshot(version, balance, stream_id, at[0].event_id)


async def test_a_saved_snapshot_loads_back_as_saved(store: AsyncEventStore) -> None:
    assert await store.load_snapshot("acc-1") is None
    saved = await stored_snapshot(store, 3, balance=30)
    await store.save_snapshot(saved)
    loaded = await store.load_snapshot("acc-1")
    assert loaded is not None
    assert (loaded.stream_id, loaded.version, loaded.state_type, loaded.schema_version) == (
        "acc-1",
        3,
        "Account",
        1,
    )
    assert loaded.event_id == saved.event_id
    assert json.loads(loaded.state) == {"id": "1", "balance": 30}
    assert await store.load_snapshot("acc-2") is None


async def test_a_newer_snapshot_replaces_an_older_one_but_not_the_reverse(
    store: AsyncEventStore,
) -> None:
    at_five = await stored_snapshot(store, 5, balance=5)
    at_ten = await stored_snapshot(store, 10, balance=10)
    at_seven = await stored_snapshot(store, 7, balance=7)
    for taken in (at_five, at_ten, at_seven):
        await store.save_snapshot(taken)
    loaded = await store.load_snapshot("acc-1")
    assert loaded is not None
    assert (loaded.version, json.loads(loaded.state)["balance"]) == (10, 10)


async def test_deleting_a_snapshot_forgets_only_that_streams_snapshot(
    store: AsyncEventStore,
) -> None:
    await store.save_snapshot(await stored_snapshot(store, 3))
    await store.save_snapshot(await stored_snapshot(store, 4, stream_id="acc-2"))
    await store.delete_snapshot("acc-1")
    await store.delete_snapshot("acc-3")  # nothing to delete
    assert await store.load_snapshot("acc-1") is None
    kept = await store.load_snapshot("acc-2")
    assert kept is not None and kept.version == 4
    await store.save_snapshot(await stored_snapshot(store, 1))  # older is fine once deleted
    again = await store.load_snapshot("acc-1")
    assert again is not None and again.version == 1


async def test_a_snapshot_not_bound_to_the_event_at_its_version_is_never_loaded(
    store: AsyncEventStore,
) -> None:
    """A snapshot left from before a restore (same version, another event) is not trusted."""
    await store.append("acc-1", [dep(1), dep(2), dep(3)])
    await store.save_snapshot(snapshot(3, balance=99))  # bound to an event that is not there
    assert await store.load_snapshot("acc-1") is None
    await store.save_snapshot(snapshot(9, balance=99))  # beyond the stream's end
    assert await store.load_snapshot("acc-1") is None
    # Another stream's event at the same version does not vouch for it either.
    other = await stored_snapshot(store, 3, stream_id="acc-2")
    await store.save_snapshot(snapshot(3, stream_id="acc-1", event_id=other.event_id))
    assert await store.load_snapshot("acc-1") is None


async def test_a_snapshot_that_no_longer_matches_the_log_is_replaced_by_an_older_one(
    store: AsyncEventStore,
) -> None:
    """After a restore the stored snapshot may be ahead of the log: a valid one replaces it."""
    await store.append("acc-1", [dep(1), dep(2)])
    await store.save_snapshot(snapshot(8, balance=80))  # stale: no event 8 any more
    valid = await stored_snapshot(store, 2, balance=2)
    await store.save_snapshot(valid)
    loaded = await store.load_snapshot("acc-1")
    assert loaded is not None and (loaded.version, loaded.event_id) == (2, valid.event_id)


@pytest.mark.parametrize("version", [0, -1])
async def test_a_snapshot_below_version_one_is_refused(
    store: AsyncEventStore, version: int
) -> None:
    with pytest.raises(InvalidArgumentError, match="version"):
        await store.save_snapshot(snapshot(version))
    assert await store.load_snapshot("acc-1") is None


async def test_a_snapshot_without_an_event_id_is_refused(store: AsyncEventStore) -> None:
    unbound = Snapshot("acc-1", 1, "Account", 1, "{}", "not-a-uuid")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="event_id"):
        await store.save_snapshot(unbound)


async def test_snapshot_state_with_a_nul_character_is_refused_by_every_store(
    store: AsyncEventStore,
) -> None:
    with pytest.raises(InvalidArgumentError, match="NUL"):
        await store.save_snapshot(
            Snapshot("acc-1", 1, "Account", 1, json.dumps({"a": "x\x00"}), uuid.uuid4())
        )
    assert await store.load_snapshot("acc-1") is None


async def test_snapshot_state_that_is_not_json_is_refused(store: AsyncEventStore) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.save_snapshot(Snapshot("acc-1", 1, "Account", 1, "{not json", uuid.uuid4()))
    assert await store.load_snapshot("acc-1") is None


# --- Reading what other code wrote ---------------------------------------------------------


class ChangingRegistry(EventRegistry):
    """Stands for the application's code changing between a write and a read.

    The store encodes and decodes through whichever registry is `current`: switching it is
    deploying another release over the same stored events, whatever the store keeps them in.
    """

    def __init__(self, current: EventRegistry) -> None:
        super().__init__()
        self.current = current

    def encode(self, event: Event, metadata: str, event_id: uuid.UUID) -> Any:
        return self.current.encode(event, metadata, event_id)

    def decode(self, event_type: str, schema_version: int, data: str | bytes) -> Event:
        return self.current.decode(event_type, schema_version, data)

    def current_classes(self) -> Mapping[str, tuple[int, type[Event]]]:
        return self.current.current_classes()  # the loads' fast path, not only `decode`

    def class_for(self, event_type: str) -> type[Event]:
        return self.current.class_for(event_type)

    def type_name(self, cls: type[Event]) -> str:
        return self.current.type_name(cls)

    def __contains__(self, event_type: object) -> bool:
        return event_type in self.current


class DepositedV1(Event):
    event_type: ClassVar[str] = "test.Deposited"
    schema_version: ClassVar[int] = 1
    value: int


async def test_unknown_type_on_read_names_it_and_keeps_the_raw_record(
    new_store: NewStore,
) -> None:
    registry = ChangingRegistry(make_registry())
    store = new_store(registry)
    await store.append("acc-1", [dep(1), Renamed(name="x")])
    registry.current = EventRegistry([Deposited])  # the code no longer knows test.Renamed
    with pytest.raises(UnknownEventTypeError) as info:
        await events_of(store, "acc-1")
    assert info.value.event_type == "test.Renamed"
    assert info.value.record.data == {"name": "x"}
    assert info.value.record.version == 2
    with pytest.raises(UnknownEventTypeError):
        [pair async for pair in store.read_stream_data("acc-1")]
    raw = [r async for r in store.read_stream_raw("acc-1")]
    assert [r.event_type for r in raw] == ["test.Deposited", "test.Renamed"]
    assert raw[0].data == {"amount": 1, "currency": "EUR", "note": ""}


async def test_old_versions_are_upcast_on_read(new_store: NewStore) -> None:
    registry = ChangingRegistry(EventRegistry([DepositedV1]))  # an older release
    store = new_store(registry)
    await store.append("acc-1", DepositedV1(value=42))
    registry.current = make_registry()  # v3, with upcasters from v1 and v2
    (event,) = await events_of(store, "acc-1")
    assert event.data == Deposited(amount=42, currency="EUR")
    assert event.schema_version == 1
    assert [pair async for pair in store.read_stream_data("acc-1")] == [
        (1, Deposited(amount=42, currency="EUR"))
    ]
    (raw,) = [r async for r in store.read_stream_raw("acc-1")]
    assert (raw.schema_version, raw.data) == (1, {"value": 42})


async def test_stored_data_that_no_longer_validates_is_a_typed_error(new_store: NewStore) -> None:
    registry = ChangingRegistry(EventRegistry([Renamed]))
    store = new_store(registry)
    await store.append("acc-1", Renamed(name="x"))

    class Stricter(Event):
        event_type: ClassVar[str] = "test.Renamed"
        name: int

    registry.current = EventRegistry([Stricter])
    with pytest.raises(InvalidEventError, match="does not validate"):
        await events_of(store, "acc-1")
    with pytest.raises(InvalidEventError, match="does not validate"):  # the loads' read
        [pair async for pair in store.read_stream_data("acc-1")]


async def test_a_raising_upcaster_is_a_typed_error(new_store: NewStore) -> None:
    registry = ChangingRegistry(EventRegistry([DepositedV1]))
    store = new_store(registry)
    await store.append("acc-1", DepositedV1(value=1))
    broken = EventRegistry([Deposited])
    broken.add_upcaster("test.Deposited", 1, lambda data: data["missing"])
    registry.current = broken
    with pytest.raises(UpcastError, match="KeyError"):
        await events_of(store, "acc-1")


async def test_a_stored_version_newer_than_the_code_is_an_upcast_error(
    new_store: NewStore,
) -> None:
    registry = ChangingRegistry(make_registry())  # Deposited v3
    store = new_store(registry)
    await store.append("acc-1", dep(1))
    registry.current = EventRegistry([DepositedV1])  # a rollback to a v1 release
    with pytest.raises(UpcastError, match="newer") as info:
        await events_of(store, "acc-1")
    assert (info.value.from_version, info.value.to_version) == (3, 1)


# --- Transactions --------------------------------------------------------------------------


class Abort(Exception):
    """Ends a transaction block the way an application error would."""


async def test_a_transaction_appends_to_several_streams_together(store: AsyncEventStore) -> None:
    async with store.transaction() as tx:
        a = await store.append("acc-1", dep(1), conn=tx)
        b = await store.append("acc-2", [dep(2), dep(3)], conn=tx)
        assert (await store.stream_info("acc-2", conn=tx)).version == 2
        assert [e.version async for e in store.read_stream("acc-2", conn=tx)] == [1, 2]
    assert a.transaction_id == b.transaction_id
    events = await events_of(store, "acc-1") + await events_of(store, "acc-2")
    assert {e.transaction_id for e in events} == {a.transaction_id}
    assert (await store.stream_info("acc-1")).version == 1


async def test_a_transaction_that_raises_writes_nothing(store: AsyncEventStore) -> None:
    await store.append("acc-1", dep(1))

    async def append_twice_then_fail() -> None:
        async with store.transaction() as tx:
            await store.append("acc-2", dep(1), conn=tx)
            await store.save_snapshot(snapshot(1, stream_id="acc-2"), conn=tx)
            await store.append("acc-1", dep(2), expected_version=1, conn=tx)
            raise Abort

    with pytest.raises(Abort):
        await append_twice_then_fail()
    assert not (await store.stream_info("acc-2")).exists
    assert await store.load_snapshot("acc-2") is None
    assert [e.data for e in await events_of(store, "acc-1")] == [dep(1)]


async def test_a_refused_append_fails_the_whole_transaction(store: AsyncEventStore) -> None:
    await store.append("acc-1", dep(1))

    async def two_appends_one_refused() -> None:
        async with store.transaction() as tx:
            await store.append("acc-2", dep(1), conn=tx)
            await store.append("acc-1", dep(2), expected_version=5, conn=tx)

    with pytest.raises(WrongExpectedVersionError):
        await two_appends_one_refused()
    assert not (await store.stream_info("acc-2")).exists
    assert (await store.stream_info("acc-1")).version == 1


async def test_a_refused_append_inside_a_transaction_leaves_it_usable(
    store: AsyncEventStore,
) -> None:
    taken = uuid.uuid4()
    await store.append("acc-1", dep(1), event_ids=[taken])
    async with store.transaction() as tx:
        with pytest.raises(WrongExpectedVersionError):
            await store.append("acc-1", dep(2), expected_version=NO_STREAM, conn=tx)
        with pytest.raises(DuplicateEventIdError):
            await store.append("acc-2", dep(2), event_ids=[taken], conn=tx)
        await store.append("acc-1", dep(3), expected_version=1, conn=tx)
        await store.append("acc-3", dep(4), conn=tx)
    assert [e.data for e in await events_of(store, "acc-1")] == [dep(1), dep(3)]
    assert not (await store.stream_info("acc-2")).exists
    assert (await store.stream_info("acc-3")).version == 1


@pytest.mark.parametrize("expected", [ANY, NO_STREAM, 0], ids=["any", "no-stream", "zero"])
async def test_retrying_an_append_inside_a_transaction_returns_the_original_result(
    store: AsyncEventStore, expected: ExpectedVersion
) -> None:
    ids = [uuid.uuid4()]
    first = await store.append("acc-1", dep(1), expected_version=expected, event_ids=ids)
    async with store.transaction() as tx:
        again = await store.append(
            "acc-1", dep(1), expected_version=expected, event_ids=ids, conn=tx
        )
    assert again.repeated
    assert (again.positions, again.transaction_id) == (first.positions, first.transaction_id)
    assert (await store.stream_info("acc-1")).version == 1


# --- The store itself ----------------------------------------------------------------------


async def test_a_store_uses_the_registry_it_was_built_with(new_store: NewStore) -> None:
    registry = make_registry()
    assert new_store(registry).registry is registry


async def test_a_store_is_a_context_manager_that_returns_itself(new_store: NewStore) -> None:
    store = new_store(make_registry())
    async with store as entered:
        assert entered is store
        await entered.append("acc-1", dep(1))
        assert (await entered.stream_info("acc-1")).version == 1
