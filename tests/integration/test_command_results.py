"""What commands return on Postgres: the append that committed, inside a transaction too."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from eventstore import (
    AsyncDeciderRepository,
    AsyncPostgresEventStore,
    AsyncRepository,
    DeciderRepository,
    Event,
    PostgresEventStore,
    Repository,
)
from eventstore.demo.bank import Account, MoneyDeposited, registry


@pytest.fixture
def store(eventstore_database_url: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore(eventstore_database_url, registry=registry) as store:
        yield store


def open_account(repo: Repository[Account], account_id: str) -> None:
    repo.update(account_id, lambda a: a.open("ann"), create=True)


def test_update_returns_the_append_that_postgres_committed(store: PostgresEventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo, "1")
    result = repo.update("1", lambda a: (a.deposit(5), a.deposit(6)))
    assert result.append is not None and result.aggregate.balance == 11
    stored = list(store.read_stream("account-1", from_version=2))
    assert result.events == tuple(e.data for e in stored)
    assert result.append.positions == tuple(e.global_position for e in stored)
    assert {e.transaction_id for e in stored} == {result.append.transaction_id}
    assert result.append.last_version == result.aggregate.version == 3


def test_commands_in_one_transaction_return_its_transaction_id(
    store: PostgresEventStore,
) -> None:
    accounts = Repository(store, Account)
    wallets = DeciderRepository(store, Wallet())
    with store.transaction() as tx:
        opened = accounts.update("1", lambda a: a.open("ann"), create=True, conn=tx)
        deposited = wallets.handle("w1", 50, conn=tx)
    assert opened.append is not None and deposited.append is not None
    assert opened.append.transaction_id == deposited.append.transaction_id
    assert (deposited.state, deposited.events) == (50, (MoneyDeposited(amount=50),))
    (stored,) = store.read_stream("wallet-w1")
    assert stored.transaction_id == deposited.append.transaction_id


async def test_async_commands_return_what_they_appended(eventstore_database_url: str) -> None:
    async with AsyncPostgresEventStore(eventstore_database_url, registry=registry) as store:
        accounts = AsyncRepository(store, Account)
        opened = await accounts.update("1", lambda a: a.open("ann"), create=True)
        nothing = await accounts.update("1", lambda a: None)
        wallets = AsyncDeciderRepository(store, Wallet())
        deposited = await wallets.handle("w1", 7)
        last = [e async for e in store.read_stream("wallet-w1", of_type=MoneyDeposited)][-1]
    assert opened.append is not None and opened.append.last_version == 1
    assert (nothing.events, nothing.append, nothing.aggregate.owner) == ((), None, "ann")
    assert deposited.append is not None and deposited.state == 7
    assert deposited.append.positions == (last.global_position,)


class Wallet:
    """Deposits the amount it is given: a decider over the bank's events."""

    category = "wallet"

    def initial_state(self) -> int:
        return 0

    def decide(self, command: int, balance: int) -> Sequence[Event]:
        return [MoneyDeposited(amount=command)]

    def evolve(self, balance: int, event: Event) -> int:
        return balance + event.amount if isinstance(event, MoneyDeposited) else balance
