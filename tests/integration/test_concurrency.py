"""Many writers on one stream: contiguous versions, no lost or duplicated event, no holes."""

from __future__ import annotations

import asyncio
import threading
import uuid

import psycopg

from eventstore import (
    NO_STREAM,
    AsyncPostgresEventStore,
    EventRegistry,
    PostgresEventStore,
    WrongExpectedVersionError,
)
from tests.support import Deposited

WRITERS = 16
ATTEMPTS_PER_WRITER = 130  # 16 x 130 = 2,080 attempts


def check_log(url: str, stream_id: str, winners: list[uuid.UUID]) -> None:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT version, event_id, global_position FROM eventstore.events "
            "WHERE stream_id = %s ORDER BY version",
            [stream_id],
        ).fetchall()
    versions = [r[0] for r in rows]
    assert versions == list(range(1, len(rows) + 1)), "versions are not contiguous"
    assert sorted(r[1] for r in rows) == sorted(winners), "stored events != successful appends"
    assert len({r[1] for r in rows}) == len(rows), "an event id is stored twice"
    positions = [r[2] for r in rows]
    # Only this stream is written, so losers burning positions would show as gaps.
    assert positions == list(range(positions[0], positions[0] + len(rows))), "position holes"


def test_sixteen_threads_on_one_stream(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    winners: list[uuid.UUID] = []
    conflicts: list[WrongExpectedVersionError] = []
    lock = threading.Lock()
    store = PostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, max_size=WRITERS
    )

    def writer() -> None:
        for _ in range(ATTEMPTS_PER_WRITER):
            version = store.stream_info("hot").version
            event_id = uuid.uuid4()
            try:
                store.append(
                    "hot",
                    Deposited(amount=1, currency="EUR"),
                    expected_version=version,
                    event_ids=[event_id],
                )
            except WrongExpectedVersionError as exc:
                with lock:
                    conflicts.append(exc)
            else:
                with lock:
                    winners.append(event_id)

    with store:
        threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(winners) + len(conflicts) == WRITERS * ATTEMPTS_PER_WRITER
    assert winners and conflicts, "the test did not produce contention"
    for c in conflicts:  # every loser saw a newer version than it expected
        assert c.actual is not None
        assert c.expected is NO_STREAM or c.actual > c.expected  # type: ignore[operator]
    check_log(eventstore_database_url, "hot", winners)


async def test_sixteen_tasks_on_one_stream(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    winners: list[uuid.UUID] = []
    conflicts: list[WrongExpectedVersionError] = []

    async def writer(store: AsyncPostgresEventStore) -> None:
        for _ in range(ATTEMPTS_PER_WRITER):
            version = (await store.stream_info("hot")).version
            event_id = uuid.uuid4()
            try:
                await store.append(
                    "hot",
                    Deposited(amount=1, currency="EUR"),
                    expected_version=version,
                    event_ids=[event_id],
                )
            except WrongExpectedVersionError as exc:
                conflicts.append(exc)
            else:
                winners.append(event_id)

    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, max_size=WRITERS
    ) as store:
        await asyncio.gather(*(writer(store) for _ in range(WRITERS)))
    assert len(winners) + len(conflicts) == WRITERS * ATTEMPTS_PER_WRITER
    assert winners and conflicts, "the test did not produce contention"
    check_log(eventstore_database_url, "hot", winners)


def test_concurrent_retries_of_one_append_store_it_once(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    events = [Deposited(amount=i, currency="EUR") for i in range(3)]
    results = []
    lock = threading.Lock()
    with PostgresEventStore(
        eventstore_database_url, registry=eventstore_registry, max_size=8
    ) as store:

        def retry() -> None:
            result = store.append("s", events, expected_version=0, event_ids=ids)
            with lock:
                results.append(result)

        threads = [threading.Thread(target=retry) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 8
        assert len({r.positions for r in results}) == 1
        assert sum(not r.repeated for r in results) == 1
        assert store.stream_info("s").version == 3
