from __future__ import annotations

import uuid
from typing import Any, ClassVar

import pytest

from eventstore import (
    ConfigurationError,
    Event,
    EventRegistry,
    InMemoryEventStore,
    InvalidArgumentError,
    InvalidEventError,
    UnknownEventTypeError,
    UpcastError,
)
from eventstore._append import validate_expected
from eventstore.events import EMPTY_METADATA, RecordedEvent, recorded_event, uuid7, uuid7_batch
from eventstore.sharding import shard_key
from tests.support import Deposited, make_registry


class Unregistered(Event):
    event_type: ClassVar[str] = "test.Unregistered"
    x: int


class NoTypeName(Event):
    x: int


def test_events_are_frozen_and_reject_unknown_fields() -> None:
    event = Deposited(amount=1, currency="EUR")
    with pytest.raises(Exception, match="frozen"):
        event.amount = 2  # type: ignore[misc]
    with pytest.raises(Exception, match="extra"):
        Deposited(amount=1, currency="EUR", surprise=True)  # type: ignore[call-arg]


def test_a_class_without_a_type_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="event_type"):
        EventRegistry([NoTypeName])


def test_registry_refuses_two_classes_for_one_name() -> None:
    class Other(Event):
        event_type: ClassVar[str] = "test.Deposited"

    registry = make_registry()
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register(Other)


def test_renaming_a_class_keeps_its_stored_name() -> None:
    registry = make_registry()
    encoded = registry.encode(Deposited(amount=1, currency="EUR"), "{}", uuid7())
    assert encoded.event_type == "test.Deposited"
    assert registry.decode("test.Deposited", 3, encoded.data) == Deposited(amount=1, currency="EUR")


def test_aliases_read_old_type_names_through_the_same_upcasters() -> None:
    registry = EventRegistry()
    registry.register(Deposited, aliases=["legacy.Deposit"])
    registry.add_upcaster("test.Deposited", 2, lambda d: {"currency": "EUR", **d})
    assert registry.decode("legacy.Deposit", 2, '{"amount": 3}') == Deposited(
        amount=3, currency="EUR"
    )


def test_upcaster_chain_brings_v1_to_v3() -> None:
    registry = make_registry()
    assert registry.decode("test.Deposited", 1, '{"value": 5}') == Deposited(
        amount=5, currency="EUR"
    )
    assert registry.decode("test.Deposited", 2, '{"amount": 5, "currency": "USD"}') == Deposited(
        amount=5, currency="USD"
    )


def test_missing_upcaster_is_a_clear_error() -> None:
    registry = EventRegistry([Deposited])
    with pytest.raises(UpcastError, match="no upcaster from v1"):
        registry.decode("test.Deposited", 1, '{"value": 5}')
    with pytest.raises(UpcastError, match="newer"):
        registry.decode("test.Deposited", 4, "{}")


def test_unknown_type_is_named() -> None:
    with pytest.raises(UnknownEventTypeError, match="nope"):
        make_registry().decode("nope", 1, "{}")
    with pytest.raises(UnknownEventTypeError):
        make_registry().encode(Unregistered(x=1), "{}", uuid7())


def test_uuid7_is_version_7_and_monotonic() -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids, key=lambda u: u.bytes)
    assert len(set(ids)) == len(ids)


def test_uuid7s_are_the_uuids_the_constructor_makes() -> None:
    import copy
    import pickle

    for made in uuid7_batch(1000):
        plain = uuid.UUID(int=made.int)
        assert made == plain and hash(made) == hash(plain) and str(made) == str(plain)
        assert made.bytes == plain.bytes and made.is_safe == plain.is_safe
        assert pickle.loads(pickle.dumps(made)) == plain and copy.copy(made) == plain
        assert uuid.UUID(f"{made.int:032x}") == plain  # the append's wire form


def test_recorded_events_built_past_init_are_the_ones_init_builds() -> None:
    import copy
    import dataclasses
    import datetime as dt
    import pickle

    values = (
        7,
        "acc-1",
        3,
        uuid7(),
        "test.Deposited",
        1,
        Deposited(amount=5, currency="EUR"),
        EMPTY_METADATA,
        dt.datetime(2026, 12, 2, 15, 0, tzinfo=dt.UTC),
        812,
    )
    made, plain = recorded_event(*values), RecordedEvent(*values)
    assert type(made) is RecordedEvent
    assert made == plain and hash(made) == hash(plain) and repr(made) == repr(plain)
    assert dataclasses.astuple(made) == dataclasses.astuple(plain)
    assert pickle.loads(pickle.dumps(made)) == plain and copy.copy(made) == plain
    assert dataclasses.replace(made, version=4) == dataclasses.replace(plain, version=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.version = 4  # type: ignore[misc]


def test_shard_key_is_stable_and_non_negative() -> None:
    # Fixed values: changing the hash would reshuffle every stored event's shard.
    assert shard_key("acc-1") == 1_887_887_009
    assert shard_key("acc-1") == shard_key("acc-1")
    assert all(0 <= shard_key(f"s-{i}") < 2**31 for i in range(1000))


@pytest.mark.parametrize("value", [-1, "1", True, 1.0, None])
def test_expected_version_must_be_a_state_or_non_negative_int(value: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        validate_expected(value)


def test_uuid7_is_monotonic_across_threads() -> None:
    import threading

    batches: list[list[uuid.UUID]] = []

    def draw() -> None:
        batches.append([uuid7() for _ in range(2000)])

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for b in batches for i in b]
    assert len(set(every)) == len(every)
    assert all(b == sorted(b, key=lambda u: u.bytes) for b in batches)


def test_an_append_larger_than_a_jsonb_value_is_refused_before_any_io(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import eventstore._append

    class Blob(Event):
        event_type: ClassVar[str] = "test.Blob"
        text: str

    # The real limit is 250 MiB; a small one exercises the same check without the memory.
    monkeypatch.setattr(eventstore._append, "MAX_APPEND_BYTES", 4 * 1024)
    store = InMemoryEventStore(EventRegistry([Blob]))
    chunk = Blob(text="\u00e9" * 700)  # 1,400 bytes in UTF-8, 700 characters
    with pytest.raises(InvalidEventError, match="one append carries at most"):
        store.append("s", [chunk] * 3)
    assert not store.stream_info("s").exists
    store.append("s", [chunk] * 2)  # under the limit
