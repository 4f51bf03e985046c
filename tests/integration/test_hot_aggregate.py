"""Hot aggregates on Postgres: many writers of one aggregate, serialised or optimistic.

Each writer has its own store (its own connections); the final count must be writers x
updates in both modes, and the serialising mode must need no retry at all.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import psycopg
import pytest

from eventstore import (
    Aggregate,
    ConfigurationError,
    Event,
    EventRegistry,
    PostgresEventStore,
    Repository,
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
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ).fetchone()
    return int(row[0]) if row else 0


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
