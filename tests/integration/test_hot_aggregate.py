"""Hot aggregates on Postgres: many writers of one aggregate, serialised or optimistic.

Each writer has its own store (its own connections); the final count must be writers x
updates in both modes, and the serialising mode must need no retry at all.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any, ClassVar

import psycopg
import pytest

from eventstore import (
    Aggregate,
    AppendResult,
    AsyncPostgresEventStore,
    AsyncRepository,
    ConfigurationError,
    Event,
    EventRegistry,
    PostgresEventStore,
    Repository,
    Snapshot,
    WrongExpectedVersionError,
    applies,
)

WRITERS = 8
UPDATES = 25


class Bumped(Event):
    event_type: ClassVar[str] = "hot.Bumped"


class Counter(Aggregate):
    category: ClassVar[str] = "counter"
    count: int = 0

    @applies
    def _bumped(self, event: Bumped) -> None:
        self.count += 1

    def bump(self) -> None:
        self.record(Bumped())


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return EventRegistry([Bumped])


def run_writers(url: str, registry: EventRegistry, *, serialize: bool) -> int:
    """Runs WRITERS threads of UPDATES updates each; returns the retries they made."""
    retries: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer() -> None:
        try:
            with PostgresEventStore(url, registry=registry, max_size=2) as store:
                repo = Repository(store, Counter, serialize=serialize, attempts=100)
                start.wait()
                for _ in range(UPDATES):
                    repo.update("hot", Counter.bump)
                retries.append(repo.retries)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return sum(retries)


@pytest.mark.parametrize("serialize", [True, False], ids=["serialized", "optimistic"])
def test_concurrent_writers_of_one_aggregate_lose_no_update(
    eventstore_database_url: str, eventstore_registry: EventRegistry, serialize: bool
) -> None:
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        repo = Repository(store, Counter)
        repo.update("hot", Counter.bump, create=True)
        retries = run_writers(eventstore_database_url, eventstore_registry, serialize=serialize)
        counter = repo.get("hot")
    assert counter.count == WRITERS * UPDATES + 1
    assert counter.version == WRITERS * UPDATES + 1
    if serialize:
        assert retries == 0


def waiting_for_advisory_lock(url: str) -> int:
    return advisory_locks(url, granted=False)


def advisory_locks(url: str, *, granted: bool) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            # This test's database only: tests in other processes hold locks of their own.
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (granted,),
        ).fetchone()
    return int(row[0]) if row else 0


def process_writer(url: str, start: Any, out: Any) -> None:
    """Runs UPDATES serialised updates in a process of its own; sends its retries."""
    registry = EventRegistry([Bumped])
    with PostgresEventStore(url, registry=registry, max_size=1) as store:
        repo = Repository(store, Counter, serialize=True, attempts=100, snapshot_every=10)
        start.wait()
        for _ in range(UPDATES):
            repo.update("hot", Counter.bump)
        out.send(repo.retries)


def test_serialised_writers_in_processes_lose_no_update(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    processes = 4
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        repo = Repository(store, Counter, snapshot_every=10)
        repo.create("hot", Counter.bump)
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(processes)
        pipes = [context.Pipe(duplex=False) for _ in range(processes)]
        workers = [
            context.Process(target=process_writer, args=(eventstore_database_url, start, sender))
            for _, sender in pipes
        ]
        for worker in workers:
            worker.start()
        retries = [receiver.recv() for receiver, _ in pipes]
        for worker in workers:
            worker.join(timeout=30)
        counter = repo.get("hot")
    assert [w.exitcode for w in workers] == [0] * processes
    assert (counter.count, counter.version) == (processes * UPDATES + 1,) * 2
    assert retries == [0] * processes


def test_a_command_transaction_commits_with_its_first_append(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        with store.command_transaction() as tx:
            store.lock_stream("counter-hot", conn=tx)
            result = store.append("counter-hot", Bumped(), conn=tx)
            # Committed with the append: visible elsewhere, and the lock is free already.
            assert store.stream_info("counter-hot").version == result.last_version == 1
            assert advisory_locks(eventstore_database_url, granted=True) == 0
            # What follows runs outside it, and is not undone when the block raises.
            store.append("counter-hot", Bumped(), conn=tx)
        assert store.stream_info("counter-hot").version == 2


class CommandFailed(Exception):
    pass


def fail_after_a_snapshot(store: PostgresEventStore, snapshot: Snapshot) -> None:
    with store.command_transaction() as tx:
        store.lock_stream("counter-hot", conn=tx)
        store.save_snapshot(snapshot, conn=tx)
        raise CommandFailed


def append_locked(store: PostgresEventStore, expected_version: int) -> AppendResult:
    with store.command_transaction() as tx:
        store.lock_stream("counter-hot", conn=tx)
        return store.append("counter-hot", Bumped(), expected_version=expected_version, conn=tx)


def test_a_command_transaction_rolls_back_what_preceded_an_append_when_the_block_raises(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        repo = Repository(store, Counter, snapshot_every=1)
        repo.create("hot", Counter.bump)
        snapshot = store.load_snapshot("counter-hot")
        assert snapshot is not None
        store.delete_snapshot("counter-hot")
        with pytest.raises(CommandFailed):
            fail_after_a_snapshot(store, snapshot)
        assert store.load_snapshot("counter-hot") is None
        assert advisory_locks(eventstore_database_url, granted=True) == 0
        with store.command_transaction() as tx:  # no append: it commits when the block ends
            store.save_snapshot(snapshot, conn=tx)
        assert store.load_snapshot("counter-hot") == snapshot


def test_a_command_transaction_refuses_a_stale_append_and_stays_usable(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        store.append("counter-hot", Bumped())
        with pytest.raises(WrongExpectedVersionError):
            append_locked(store, 5)
        assert append_locked(store, 1).last_version == 2
        assert store.stream_info("counter-hot").version == 2


class Typed(Event):
    event_type: ClassVar[str] = "hot.Typed"
    code: int


class Text(Aggregate):
    category: ClassVar[str] = "text"
    text: str = ""

    @applies
    def _typed(self, event: Typed) -> None:
        self.text += chr(event.code)


def test_a_serialised_command_whose_snapshot_the_database_refuses_still_succeeds(
    eventstore_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = EventRegistry([Typed])
    with PostgresEventStore(eventstore_database_url, registry=registry) as store:
        repo = Repository(store, Text, serialize=True, snapshot_every=2)
        repo.create("1", lambda text: text.record(Typed(code=ord("a"))))
        # The state now holds a NUL, which the store refuses in a snapshot; the event was
        # committed with the append already, so the command reports success (a failure
        # would make a caller retry a command that took effect).
        with caplog.at_level(logging.WARNING, logger="eventstore.repository"):
            result = repo.update("1", lambda text: text.record(Typed(code=0)))
        assert result.append is not None and result.aggregate.version == 2
        assert store.load_snapshot("text-1") is None
        assert [r.getMessage() for r in caplog.records] == ["snapshot not saved"]
        assert repo.get("1").text == "a\x00"


async def test_an_async_command_transaction_commits_with_its_first_append(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=eventstore_registry
    ) as store:
        async with store.command_transaction() as tx:
            await store.lock_stream("counter-hot", conn=tx)
            await store.append("counter-hot", Bumped(), conn=tx)
            assert (await store.stream_info("counter-hot")).version == 1
            assert advisory_locks(eventstore_database_url, granted=True) == 0
        repo = AsyncRepository(store, Counter, serialize=True)
        assert (await repo.update("hot", Counter.bump)).aggregate.count == 2


def test_lock_stream_holds_other_writers_until_the_transaction_ends(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    store = PostgresEventStore(eventstore_database_url, registry=eventstore_registry)
    taken = threading.Event()
    order: list[str] = []

    def second() -> None:
        with store.transaction() as tx:
            store.lock_stream("counter-hot", conn=tx)
            order.append("second")
            taken.set()

    with store:
        with store.transaction() as tx:
            store.lock_stream("counter-hot", conn=tx)
            thread = threading.Thread(target=second)
            thread.start()
            deadline = time.monotonic() + 10
            while waiting_for_advisory_lock(eventstore_database_url) == 0:
                assert time.monotonic() < deadline, "the second writer never waited"
            assert not taken.is_set()
            order.append("first")
        thread.join(timeout=10)
    assert order == ["first", "second"]


def test_lock_stream_needs_a_transaction(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    store = PostgresEventStore(eventstore_database_url, registry=eventstore_registry)
    with store, pytest.raises(ConfigurationError, match="conn="):
        store.lock_stream("counter-hot")
