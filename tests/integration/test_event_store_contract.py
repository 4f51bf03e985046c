"""One contract, run against every EventStore implementation (in memory and Postgres)."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest

from eventstore import (
    ANY,
    NO_STREAM,
    STREAM_EXISTS,
    DuplicateEventIdError,
    Event,
    EventMetadata,
    EventRegistry,
    EventStore,
    InvalidArgumentError,
    InvalidEventError,
    InvalidStreamIdError,
    UnknownEventTypeError,
    UpcastError,
    WrongExpectedVersionError,
)
from tests.support import Deposited, Opened, Renamed


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> EventStore:
    if request.param == "memory":
        return request.getfixturevalue("in_memory_event_store")  # type: ignore[no-any-return]
    return request.getfixturevalue("postgres_event_store")  # type: ignore[no-any-return]


def dep(amount: int) -> Deposited:
    return Deposited(amount=amount, currency="EUR")


def test_append_then_read_returns_typed_events_in_order(store: EventStore) -> None:
    result = store.append("acc-1", [Opened(owner="ann"), dep(5), dep(7)])
    assert (result.first_version, result.last_version) == (1, 3)
    assert list(result.positions) == sorted(result.positions)
    events = list(store.read_stream("acc-1"))
    assert [e.data for e in events] == [Opened(owner="ann"), dep(5), dep(7)]
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.global_position for e in events] == list(result.positions)
    assert [e.event_id for e in events] == list(result.event_ids)
    assert {e.transaction_id for e in events} == {result.transaction_id}


def test_single_event_can_be_passed_without_a_list(store: EventStore) -> None:
    assert store.append("acc-1", dep(1)).last_version == 1


def test_append_with_exact_expected_version_succeeds_when_it_matches(store: EventStore) -> None:
    store.append("acc-1", dep(1), expected_version=NO_STREAM)
    result = store.append("acc-1", dep(2), expected_version=1)
    assert result.last_version == 2


def test_append_rejects_stale_expected_version(store: EventStore) -> None:
    store.append("acc-1", [dep(1), dep(2)])
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append("acc-1", dep(3), expected_version=1)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("acc-1", 1, 2)
    assert store.stream_info("acc-1").version == 2


def test_no_stream_rejects_an_existing_stream(store: EventStore) -> None:
    store.append("acc-1", dep(1))
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append("acc-1", dep(2), expected_version=NO_STREAM)
    assert info.value.actual == 1


def test_exact_version_zero_means_no_stream(store: EventStore) -> None:
    store.append("acc-1", dep(1), expected_version=0)
    with pytest.raises(WrongExpectedVersionError):
        store.append("acc-1", dep(1), expected_version=0)


def test_stream_exists_rejects_a_missing_stream(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersionError) as info:
        store.append("acc-1", dep(1), expected_version=STREAM_EXISTS)
    assert info.value.actual is None
    store.append("acc-1", dep(1))
    assert store.append("acc-1", dep(2), expected_version=STREAM_EXISTS).last_version == 2


def test_exact_version_rejects_a_missing_stream(store: EventStore) -> None:
    with pytest.raises(WrongExpectedVersionError):
        store.append("acc-1", dep(1), expected_version=3)
    assert not store.stream_info("acc-1").exists


def test_any_appends_whatever_the_version(store: EventStore) -> None:
    store.append("acc-1", dep(1), expected_version=ANY)
    assert store.append("acc-1", dep(2), expected_version=ANY).last_version == 2


@pytest.mark.parametrize("expected", [NO_STREAM, ANY, 0])
def test_retrying_an_append_returns_the_original_result(
    store: EventStore, expected: object
) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    first = store.append("acc-1", [dep(1), dep(2)], expected_version=expected, event_ids=ids)
    again = store.append("acc-1", [dep(1), dep(2)], expected_version=expected, event_ids=ids)
    assert again.repeated and not first.repeated
    assert (again.positions, again.first_version, again.last_version) == (
        first.positions,
        first.first_version,
        first.last_version,
    )
    assert again.transaction_id == first.transaction_id
    assert store.stream_info("acc-1").version == 2


def test_retrying_after_later_appends_still_returns_the_original_result(
    store: EventStore,
) -> None:
    ids = [uuid.uuid4()]
    store.append("acc-1", dep(1))
    first = store.append("acc-1", dep(2), expected_version=1, event_ids=ids)
    store.append("acc-1", dep(3), expected_version=2)
    again = store.append("acc-1", dep(2), expected_version=1, event_ids=ids)
    assert again.positions == first.positions and again.repeated


def test_reusing_an_event_id_elsewhere_is_an_error(store: EventStore) -> None:
    event_id = uuid.uuid4()
    store.append("acc-1", dep(1), event_ids=[event_id])
    with pytest.raises(DuplicateEventIdError):
        store.append("acc-2", dep(1), event_ids=[event_id])
    with pytest.raises(DuplicateEventIdError):
        store.append("acc-1", [dep(1), dep(2)], event_ids=[event_id, uuid.uuid4()])
    assert not store.stream_info("acc-2").exists
    assert store.stream_info("acc-1").version == 1


def test_invalid_payload_fails_before_anything_is_written(store: EventStore) -> None:
    bad = Deposited.model_construct(amount=float("nan"), currency=object())
    with pytest.raises(InvalidEventError):
        store.append("acc-1", [dep(1), bad])
    with pytest.raises(InvalidEventError):
        store.append("acc-1", [dep(1), {"amount": 1}])  # type: ignore[list-item]
    with pytest.raises(InvalidEventError):
        store.append("acc-1", Renamed(name="nul \x00 inside"))
    with pytest.raises(InvalidEventError):
        store.append("acc-1", [])
    assert not store.stream_info("acc-1").exists
    assert list(store.read_stream("acc-1")) == []


def test_unregistered_event_class_is_rejected_on_write(store: EventStore) -> None:
    from tests.unit.test_events import Unregistered

    with pytest.raises(UnknownEventTypeError):
        store.append("acc-1", Unregistered(x=1))
    assert not store.stream_info("acc-1").exists


def test_metadata_round_trips(store: EventStore) -> None:
    meta = EventMetadata(
        correlation_id="c-1",
        causation_id="c-0",
        actor="ann",
        tenant="t1",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        custom="kept",  # type: ignore[call-arg]
    )
    store.append("acc-1", dep(1), metadata=meta)
    store.append("acc-1", dep(2), metadata={"actor": "bob"})
    first, second = store.read_stream("acc-1")
    assert first.metadata == meta
    assert first.metadata.model_extra == {"custom": "kept"}
    assert second.metadata.actor == "bob"


def test_read_backward_from_a_version_with_a_limit(store: EventStore) -> None:
    store.append("acc-1", [dep(i) for i in range(1, 11)])
    assert [e.version for e in store.read_stream("acc-1", direction="backward", limit=3)] == [
        10,
        9,
        8,
    ]
    assert [
        e.version for e in store.read_stream("acc-1", direction="backward", from_version=4)
    ] == [4, 3, 2, 1]
    assert [e.version for e in store.read_stream("acc-1", from_version=8)] == [8, 9, 10]
    assert [e.version for e in store.read_stream("acc-1", from_version=3, limit=2)] == [3, 4]
    assert list(store.read_stream("acc-1", limit=0)) == []
    assert list(store.read_stream("missing")) == []


def test_stream_info_reports_missing_and_existing_streams(store: EventStore) -> None:
    info = store.stream_info("acc-1")
    assert (info.exists, info.version) == (False, 0)
    store.append("acc-1", [dep(1), dep(2)])
    info = store.stream_info("acc-1")
    assert (info.exists, info.version) == (True, 2)


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
def test_hostile_stream_ids_are_stored_exactly(store: EventStore, stream_id: str) -> None:
    store.append(stream_id, dep(1))
    (event,) = store.read_stream(stream_id)
    assert event.stream_id == stream_id
    assert store.stream_info(stream_id).version == 1


@pytest.mark.parametrize(
    ("stream_id", "reason"),
    [
        ("", "empty"),
        ("x" * 10_000, "limit"),
        ("流" * 400, "limit"),
        ("nul\x00", "NUL"),
        ("\ud800", "surrogate"),
    ],
)
def test_unstorable_stream_ids_are_rejected_clearly(
    store: EventStore, stream_id: str, reason: str
) -> None:
    with pytest.raises(InvalidStreamIdError, match=reason):
        store.append(stream_id, dep(1))


def test_unknown_type_on_read_names_it_and_keeps_the_raw_record(store: EventStore) -> None:
    store.append("acc-1", [dep(1), Renamed(name="x")])
    store.registry._entries.pop("test.Renamed")  # the code no longer knows this type
    with pytest.raises(UnknownEventTypeError) as info:
        list(store.read_stream("acc-1"))
    assert info.value.event_type == "test.Renamed"
    assert info.value.record.data == {"name": "x"}
    raw = list(store.read_stream_raw("acc-1"))
    assert [r.event_type for r in raw] == ["test.Deposited", "test.Renamed"]
    assert raw[0].data == {"amount": 1, "currency": "EUR", "note": ""}


def test_invalid_expected_version_is_rejected(store: EventStore) -> None:
    for bad in (-1, "1", True, 1.5):
        with pytest.raises(InvalidArgumentError):
            store.append("acc-1", dep(1), expected_version=bad)  # type: ignore[arg-type]


class DepositedV1(Event):
    event_type: ClassVar[str] = "test.Deposited"
    schema_version: ClassVar[int] = 1
    value: int


def test_old_versions_are_upcast_on_read(store: EventStore) -> None:
    current = store.registry
    store._registry = EventRegistry([DepositedV1])  # type: ignore[attr-defined]
    try:
        store.append("acc-1", DepositedV1(value=42))  # written by an older release
    finally:
        store._registry = current  # type: ignore[attr-defined]
    (event,) = store.read_stream("acc-1")
    assert event.data == Deposited(amount=42, currency="EUR")
    assert event.schema_version == 1
    (raw,) = store.read_stream_raw("acc-1")
    assert raw.data == {"value": 42}


@pytest.mark.parametrize(
    "kwargs",
    [{"direction": "sideways"}, {"limit": -1}, {"from_version": -3}, {"limit": "10"}],
)
def test_bad_read_arguments_fail_at_the_call(store: EventStore, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        store.read_stream("acc-1", **kwargs)  # no iteration needed
    with pytest.raises(InvalidStreamIdError):
        store.read_stream_raw("")


def test_a_mapping_is_not_a_list_of_events(store: EventStore) -> None:
    with pytest.raises(InvalidEventError):
        store.append("acc-1", {"amount": 1})  # type: ignore[arg-type]


def test_stored_data_that_no_longer_validates_is_a_typed_error(store: EventStore) -> None:
    current = store.registry
    store._registry = EventRegistry([Renamed])  # type: ignore[attr-defined]
    store.append("acc-1", Renamed(name="x"))
    store._registry = current  # type: ignore[attr-defined]

    class Stricter(Event):
        event_type: ClassVar[str] = "test.Renamed"
        name: int

    store._registry = EventRegistry([Stricter])  # type: ignore[attr-defined]
    try:
        with pytest.raises(InvalidEventError, match="does not validate"):
            list(store.read_stream("acc-1"))
    finally:
        store._registry = current  # type: ignore[attr-defined]


def test_a_raising_upcaster_is_a_typed_error(store: EventStore) -> None:
    current = store.registry
    store._registry = EventRegistry([DepositedV1])  # type: ignore[attr-defined]
    store.append("acc-1", DepositedV1(value=1))
    broken = EventRegistry([Deposited])
    broken.add_upcaster("test.Deposited", 1, lambda data: data["missing"])
    store._registry = broken  # type: ignore[attr-defined]
    try:
        with pytest.raises(UpcastError, match="KeyError"):
            list(store.read_stream("acc-1"))
    finally:
        store._registry = current  # type: ignore[attr-defined]


def test_read_stream_data_yields_versions_and_typed_events(store: EventStore) -> None:
    store.append("acc-1", [Opened(owner="ann"), dep(5), dep(7)])
    assert list(store.read_stream_data("acc-1", from_version=2)) == [(2, dep(5)), (3, dep(7))]
    assert list(store.read_stream_data("missing")) == []


def test_an_id_reused_in_a_later_position_is_refused_and_nothing_is_written(
    store: EventStore,
) -> None:
    taken = uuid.uuid4()
    store.append("acc-1", dep(1), event_ids=[taken])
    with pytest.raises(DuplicateEventIdError):
        store.append("acc-2", [dep(1), dep(2)], event_ids=[uuid.uuid4(), taken])
    assert not store.stream_info("acc-2").exists
    assert store.append("acc-2", dep(3)).last_version == 1
