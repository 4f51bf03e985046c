"""The in-memory stores' own behaviour: typed reads, transactions, the protocol's extras."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

import pytest

from eventstore import (
    AsyncInMemoryEventStore,
    ConfigurationError,
    Event,
    EventRegistry,
    InMemoryEventStore,
    InvalidArgumentError,
    InvalidEventError,
    RecordedEvent,
    Snapshot,
)
from tests.support import Deposited, Opened, make_registry


class Withdrawn(Event):
    event_type: ClassVar[str] = "memory.Withdrawn"
    amount: int


class LargeDeposit(Deposited):
    event_type: ClassVar[str] = "memory.LargeDeposit"


def registry() -> EventRegistry:
    registry = make_registry()
    registry.register(Withdrawn)
    registry.register(LargeDeposit)
    return registry


def euros(amount: int) -> Deposited:
    return Deposited(amount=amount, currency="EUR")


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore(registry())


@pytest.fixture
def async_store() -> AsyncInMemoryEventStore:
    return AsyncInMemoryEventStore(registry())


# --- Reads narrowed with of_type ------------------------------------------------------------


def test_of_type_reads_events_of_that_class_and_its_subclasses(store: InMemoryEventStore) -> None:
    store.append("s", [euros(5), LargeDeposit(amount=1000, currency="EUR")])
    events: list[RecordedEvent[Deposited]] = list(store.read_stream("s", of_type=Deposited))
    assert [e.data.amount for e in events] == [5, 1000]
    assert sum(e.data.amount for e in store.read_stream("s", of_type=Event)) == 1005


def test_of_type_raises_invalid_event_error_at_an_event_of_another_class(
    store: InMemoryEventStore,
) -> None:
    store.append("s", [euros(5), Withdrawn(amount=2), euros(7)])
    events = store.read_stream("s", of_type=Deposited)
    assert next(events).data.amount == 5
    with pytest.raises(InvalidEventError, match=r"holds 'memory.Withdrawn' .* version 2") as exc:
        next(events)
    assert isinstance(exc.value.event, RecordedEvent)
    assert (exc.value.event.version, exc.value.event.data) == (2, Withdrawn(amount=2))


def test_of_type_applies_to_backward_reads_and_slices(store: InMemoryEventStore) -> None:
    store.append("s", [Opened(owner="ann"), euros(5), euros(7)])
    newest = store.read_stream("s", direction="backward", limit=2, of_type=Deposited)
    assert [e.data.amount for e in newest] == [7, 5]
    assert [e.version for e in store.read_stream("s", from_version=2, of_type=Deposited)] == [2, 3]


def test_of_type_that_is_not_an_event_class_is_refused_at_the_call(
    store: InMemoryEventStore,
) -> None:
    for wrong in (str, "Deposited", euros(1)):
        with pytest.raises(InvalidArgumentError, match="of_type must be an Event subclass"):
            store.read_stream("s", of_type=wrong)  # type: ignore[call-overload]


def test_a_direction_outside_the_literal_is_still_refused_at_run_time(
    store: InMemoryEventStore,
) -> None:
    with pytest.raises(InvalidArgumentError, match="direction"):
        store.read_stream("s", direction="sideways")  # type: ignore[call-overload]
    with pytest.raises(InvalidArgumentError, match="direction"):
        store.read_stream_raw("s", direction="up")  # type: ignore[arg-type]


async def test_async_of_type_reads_and_checks_like_the_sync_store(
    async_store: AsyncInMemoryEventStore,
) -> None:
    await async_store.append("s", [euros(5), Withdrawn(amount=2)])
    events = async_store.read_stream("s", of_type=Deposited)
    assert (await anext(events)).data.amount == 5
    with pytest.raises(InvalidEventError):
        await anext(events)
    with pytest.raises(InvalidArgumentError):
        async_store.read_stream("s", of_type=int)  # type: ignore[call-overload]


# --- Transactions ---------------------------------------------------------------------------


class Abort(Exception):
    """Ends a transaction block the way an application error would."""


def test_a_transaction_commits_appends_to_several_streams_together(
    store: InMemoryEventStore,
) -> None:
    with store.transaction() as tx:
        assert tx is None  # what every method's conn accepts
        first = store.append("a", euros(1), conn=tx)
        second = store.append("b", euros(2), conn=tx)
    assert first.transaction_id == second.transaction_id
    assert store.append("c", euros(3)).transaction_id != first.transaction_id
    assert (store.stream_info("a").version, store.stream_info("b").version) == (1, 1)


def test_a_transaction_that_raises_undoes_its_appends_and_snapshots(
    store: InMemoryEventStore,
) -> None:
    before = store.append("a", euros(1))

    def write_then_fail() -> None:
        with store.transaction() as tx:
            second = store.append("a", euros(2), conn=tx)
            store.append("b", euros(3), conn=tx)
            store.save_snapshot(Snapshot("a", 2, "Account", 1, "{}", second.event_ids[0]), conn=tx)
            raise Abort

    with pytest.raises(Abort):
        write_then_fail()
    assert [e.data for e in store.read_stream("a")] == [euros(1)]
    assert not store.stream_info("b").exists
    assert store.load_snapshot("a") is None
    # Undone: the stream is back at version 1. As in Postgres, positions are not reused.
    after = store.append("a", euros(2))
    assert (before.positions, after.first_version, after.positions) == ((1,), 2, (4,))


def test_other_threads_wait_for_a_transaction_to_end(store: InMemoryEventStore) -> None:
    seen: list[int] = []
    inside = threading.Event()

    def reader() -> None:
        inside.wait()
        seen.append(store.stream_info("a").version)

    thread = threading.Thread(target=reader)
    thread.start()
    with store.transaction() as tx:
        store.append("a", euros(1), conn=tx)
        inside.set()
        thread.join(timeout=0.1)
        assert thread.is_alive()  # blocked until the transaction ends
        store.append("a", euros(2), conn=tx)
    thread.join()
    assert seen == [2]


def test_a_connection_is_still_refused(store: InMemoryEventStore) -> None:
    with pytest.raises(ConfigurationError, match="does not take a connection"):
        store.append("a", euros(1), conn=object())  # type: ignore[arg-type]


def test_the_store_is_a_context_manager_that_keeps_its_events(store: InMemoryEventStore) -> None:
    with store as entered:
        assert entered is store
        store.append("a", euros(1))
    store.close()
    assert store.stream_info("a").version == 1


async def test_an_async_transaction_commits_or_undoes_the_block(
    async_store: AsyncInMemoryEventStore,
) -> None:
    async with async_store.transaction() as tx:
        await async_store.append("a", euros(1), conn=tx)

    async def write_then_fail() -> None:
        async with async_store.transaction() as tx:
            await async_store.append("a", euros(2), conn=tx)
            raise Abort

    with pytest.raises(Abort):
        await write_then_fail()
    assert [e.version async for e in async_store.read_stream("a")] == [1]


async def test_other_tasks_wait_for_an_async_transaction_to_end(
    async_store: AsyncInMemoryEventStore,
) -> None:
    inside = asyncio.Event()

    async def reader() -> int:
        await inside.wait()
        return (await async_store.stream_info("a")).version

    task = asyncio.create_task(reader())
    async with async_store.transaction() as tx:
        await async_store.append("a", euros(1), conn=tx)
        inside.set()
        await asyncio.sleep(0)  # the reader runs up to the store, and waits there
        await asyncio.sleep(0)
        assert not task.done()
        # A task started inside the transaction is part of it, and does not wait.
        await asyncio.gather(async_store.append("a", euros(2), conn=tx))
    assert await task == 2


async def test_the_async_store_is_an_async_context_manager(
    async_store: AsyncInMemoryEventStore,
) -> None:
    async with async_store as entered:
        assert entered is async_store
        await async_store.append("a", euros(1))
    await async_store.delete_snapshot("a")
    assert (await async_store.stream_info("a")).version == 1
