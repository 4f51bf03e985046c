"""Reading long streams page by page, and reads narrowed to an event class, sync and async."""

from __future__ import annotations

import tracemalloc

import pytest

from eventstore import (
    AsyncPostgresEventStore,
    EventRegistry,
    InvalidArgumentError,
    InvalidEventError,
    PostgresEventStore,
    RecordedEvent,
)
from tests.support import Deposited, Opened


def test_reads_cross_page_boundaries_in_both_directions(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, page_size=7
    ) as store:
        store.append("s", [Deposited(amount=i, currency="EUR") for i in range(1, 51)])
        assert [e.data.amount for e in store.read_stream("s")] == list(range(1, 51))  # type: ignore[attr-defined]
        assert [e.version for e in store.read_stream("s", direction="backward")] == list(
            range(50, 0, -1)
        )
        assert [e.version for e in store.read_stream("s", from_version=10, limit=15)] == list(
            range(10, 25)
        )
        assert len(list(store.read_stream_raw("s", limit=14))) == 14


async def test_async_reads_cross_page_boundaries(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, page_size=4
    ) as store:
        await store.append("s", [Deposited(amount=i, currency="EUR") for i in range(1, 11)])
        versions = [e.version async for e in store.read_stream("s", direction="backward")]
        assert versions == list(range(10, 0, -1))


def test_reading_a_long_stream_keeps_memory_constant(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, page_size=500
    ) as store:
        for _ in range(20):
            store.append("long", [Deposited(amount=1, currency="EUR", note="x" * 200)] * 1000)
        tracemalloc.start()
        count = 0
        for _ in store.read_stream("long"):
            count += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert count == 20_000
    # 20,000 decoded events would need well over 10 MB held at once; a page is ~0.5 MB.
    assert peak < 5_000_000, peak


def test_of_type_narrows_a_read_and_refuses_an_event_of_another_class(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, page_size=2
    ) as store:
        store.append("s", [Deposited(amount=i, currency="EUR") for i in range(1, 5)])
        store.append("s", Opened(owner="ann"))
        deposits = store.read_stream("s", limit=4, of_type=Deposited)
        assert sum(e.data.amount for e in deposits) == 10
        events = store.read_stream("s", direction="backward", of_type=Deposited)
        with pytest.raises(InvalidEventError, match=r"holds 'test.Opened' \(Opened\) at version 5"):
            next(events)
        with pytest.raises(InvalidEventError) as caught:
            list(store.read_stream("s", from_version=3, of_type=Deposited))
        assert isinstance(caught.value.event, RecordedEvent)
        assert (caught.value.event.version, caught.value.event.data) == (5, Opened(owner="ann"))
        with pytest.raises(InvalidArgumentError, match="of_type"):
            store.read_stream("s", of_type=dict)  # type: ignore[call-overload]


async def test_async_of_type_narrows_a_read_and_refuses_an_event_of_another_class(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=eventstore_registry
    ) as store:
        await store.append("s", [Deposited(amount=2, currency="EUR"), Opened(owner="ann")])
        events = store.read_stream("s", of_type=Deposited)
        assert (await anext(events)).data.amount == 2
        with pytest.raises(InvalidEventError, match="not a Deposited"):
            await anext(events)
        with pytest.raises(InvalidArgumentError, match="direction"):
            store.read_stream("s", direction="sideways", of_type=Deposited)  # type: ignore[arg-type]
