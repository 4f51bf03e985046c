"""Repositories on Postgres: contention, rows written by old releases, the caller's transaction.

What repositories promise on every store is in `tests/contract`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator

import psycopg
import pytest

from eventstore import (
    AsyncPostgresEventStore,
    AsyncRepository,
    EventRegistry,
    PostgresEventStore,
    Repository,
)
from eventstore.demo.bank import Account, MoneyDeposited, registry


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return registry


@pytest.fixture
def store(eventstore_database_url: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore(eventstore_database_url, registry=registry, max_size=8) as store:
        yield store


def open_account(repo: Repository[Account], account_id: str) -> None:
    repo.update(account_id, lambda a: a.open("ann"), create=True)


def test_eight_writers_two_hundred_commands_lose_no_update(store: PostgresEventStore) -> None:
    # Snapshots keep each reload short; contention and retries are what is under test.
    repo = Repository(store, Account, attempts=100, snapshot_every=50)
    open_account(repo, "hot")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(200):
                repo.update("hot", lambda a, amount=n * 1000 + i: a.deposit(amount))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = sum(n * 1000 + i for n in range(8) for i in range(200))
    account = repo.get("hot")
    assert account.balance == expected
    assert store.stream_info("account-hot").version == 1 + 1600
    deposits = [e for e in store.read_stream("account-hot") if e.event_type.endswith("Deposited")]
    assert len(deposits) == 1600


def test_events_stored_as_v1_load_as_v3(
    store: PostgresEventStore, eventstore_database_url: str
) -> None:
    repo = Repository(store, Account)
    open_account(repo, "1")
    with psycopg.connect(eventstore_database_url) as conn:
        # Written by a release whose MoneyDeposited was v1 ({"cents": ...}) and v2.
        for version, (schema, data) in enumerate(
            [(1, '{"cents": 250}'), (2, '{"amount": 50}')], start=2
        ):
            conn.execute(
                "UPDATE eventstore.streams SET version = %s WHERE stream_id = 'account-1'",
                [version],
            )
            conn.execute(
                "INSERT INTO eventstore.events (stream_id, version, event_id, event_type, "
                "schema_version, shard_key, data) VALUES ('account-1', %s, gen_random_uuid(), "
                "'bank.MoneyDeposited', %s, 0, %s)",
                [version, schema, data],
            )
    events = [e.data for e in store.read_stream("account-1")][1:]
    assert events == [MoneyDeposited(amount=250), MoneyDeposited(amount=50)]
    assert repo.get("1").balance == 300
    repo.update("1", lambda a: a.deposit(1))  # and the aggregate keeps going at version 4
    assert store.stream_info("account-1").version == 4


def test_save_in_the_callers_transaction(
    store: PostgresEventStore, eventstore_database_url: str
) -> None:
    repo = Repository(store, Account, snapshot_every=1)
    with psycopg.connect(eventstore_database_url) as conn:
        repo.update("1", lambda a: a.open("ann"), create=True, conn=conn)
        conn.rollback()
    assert repo.get_or_none("1") is None
    assert store.load_snapshot("account-1") is None
    with psycopg.connect(eventstore_database_url) as conn:
        repo.update("1", lambda a: a.open("ann"), create=True, conn=conn)
        conn.commit()
    assert repo.get("1").owner == "ann"
    assert store.load_snapshot("account-1") is not None


async def test_async_repository_with_concurrent_tasks(eventstore_database_url: str) -> None:
    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=registry, max_size=8
    ) as store:
        repo = AsyncRepository(store, Account, snapshot_every=50, attempts=100)
        await repo.update("1", lambda a: a.open("ann"), create=True)

        async def writer() -> None:
            for _ in range(25):
                await repo.update("1", lambda a: a.deposit(1))

        await asyncio.gather(*(writer() for _ in range(8)))
        account = await repo.get("1")
    assert (account.balance, account.version) == (200, 201)


def test_a_snapshot_row_copied_from_another_stream_is_not_trusted(
    store: PostgresEventStore,
) -> None:
    repo = Repository(store, Account, snapshot_every=1)
    for account, amount in (("a", 10), ("b", 99)):
        repo.update(account, lambda acct: acct.open("ann"), create=True)
        repo.update(account, lambda acct, n=amount: acct.deposit(n))  # type: ignore[misc]
    b_state = store.load_snapshot("account-b")
    assert b_state is not None and b_state.version == 2
    # B's row copied under A's stream id, at A's version: same class, same version.
    store.delete_snapshot("account-a")
    store.save_snapshot(dataclasses.replace(b_state, stream_id="account-a"))
    loaded = repo.get("a")
    assert (loaded.id, loaded.balance) == ("a", 10)
    result = repo.update("a", lambda acct: acct.deposit(1))
    assert result.append is not None and result.append.stream_id == "account-a"
    assert repo.get("b").balance == 99  # B's stream untouched
