"""Repositories over every store: loading, saving, retrying on conflicts, snapshots, deciders.

Written async; `test_repositories.py` is generated from it (see `tests/contract/conftest.py`).
Effects are checked through the store and through fresh loads, not through return values.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import pytest

from eventstore import (
    AggregateError,
    AggregateNotFoundError,
    AppendResult,
    AsyncDeciderRepository,
    AsyncEventStore,
    AsyncRepository,
    Event,
    EventRegistry,
    Snapshot,
    WrongExpectedVersionError,
    uuid7,
)
from eventstore.demo.bank import (
    Account,
    AccountClosed,
    AccountOpened,
    InsufficientFunds,
    MoneyDeposited,
    MoneyWithdrawn,
)


class Incremented(Event):
    event_type: ClassVar[str] = "counter.Incremented"
    by: int


@dataclasses.dataclass(frozen=True)
class Increment:
    by: int
    limit: int = 10


class CounterDecider:
    """Counts up to a limit: the functional style, through a `DeciderRepository`."""

    category = "counter"

    def initial_state(self) -> int:
        return 0

    def decide(self, command: Increment, state: int) -> Sequence[Event]:
        if state + command.by > command.limit:
            raise ValueError("over the limit")
        return [Incremented(by=command.by)] if command.by else []

    def evolve(self, state: int, event: Event) -> int:
        return state + event.by if isinstance(event, Incremented) else state


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return EventRegistry(
        [AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed, Incremented]
    )


class InterferingStore:
    """Wraps a store: before each of its first ``times`` appends, another writer appends.

    It is the concurrent writer that gets in between a load and a save, made deterministic.
    Everything but `append` goes straight to the wrapped store.
    """

    def __init__(self, store: AsyncEventStore, event: Event, times: int) -> None:
        self.store = store
        self.event = event
        self.times = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def append(self, stream_id: str, events: Any, **kwargs: Any) -> AppendResult:
        if self.times > 0:
            self.times -= 1
            await self.store.append(stream_id, self.event)
        return await self.store.append(stream_id, events, **kwargs)


def interfering(store: AsyncEventStore, event: Event, times: int = 1) -> AsyncEventStore:
    return cast(AsyncEventStore, InterferingStore(store, event, times))


async def data_of(store: AsyncEventStore, stream_id: str) -> list[Event]:
    return [event async for _, event in store.read_stream_data(stream_id)]


async def open_account(repo: AsyncRepository[Account], account_id: str = "1") -> None:
    await repo.update(account_id, lambda a: a.open("ann"), create=True)


async def deposit(repo: AsyncRepository[Account], amount: int, times: int = 1) -> None:
    for _ in range(times):
        await repo.update("1", lambda a: a.deposit(amount))


# --- Loading and saving aggregates ---------------------------------------------------------


async def test_update_with_create_starts_a_new_aggregate(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    account = await repo.get("1")
    assert (account.id, account.owner, account.version) == ("1", "ann", 1)
    assert await data_of(store, "account-1") == [AccountOpened(owner="ann")]


async def test_get_rebuilds_the_aggregate_from_all_its_events(store: AsyncEventStore) -> None:
    await store.append(
        "account-1",
        [AccountOpened(owner="bob"), MoneyDeposited(amount=50), MoneyWithdrawn(amount=20)],
    )
    account = await AsyncRepository(store, Account).get("1")
    assert (account.owner, account.balance, account.version) == ("bob", 30, 3)
    assert account.pending_events == ()


async def test_a_missing_aggregate_is_not_found(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    assert await repo.get_or_none("nobody") is None
    with pytest.raises(AggregateNotFoundError) as info:
        await repo.get("nobody")
    assert (info.value.aggregate, info.value.aggregate_id) == ("Account", "nobody")
    assert isinstance(info.value, LookupError)


async def test_a_stored_event_the_aggregate_has_no_handler_for_is_a_clear_error(
    store: AsyncEventStore,
) -> None:
    await store.append(
        "account-1", [AccountOpened(owner="ann"), Incremented(by=1), MoneyDeposited(amount=5)]
    )
    with pytest.raises(AggregateError, match=r"Account has no @applies handler for Incremented"):
        await AsyncRepository(store, Account).get("1")


async def test_update_of_a_missing_aggregate_is_not_found_without_create(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account)
    with pytest.raises(AggregateNotFoundError):
        await repo.update("nobody", lambda a: a.open("ann"))
    assert not (await store.stream_info("account-nobody")).exists


async def test_save_appends_the_pending_events_after_the_loaded_version(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    account = await repo.get("1")
    account.deposit(10)
    account.deposit(5)
    await repo.save(account, metadata={"actor": "teller"})
    assert (await repo.get("1")).balance == 15
    assert (await store.stream_info("account-1")).version == 3
    events = [e async for e in store.read_stream("account-1", from_version=2)]
    assert [e.data for e in events] == [MoneyDeposited(amount=10), MoneyDeposited(amount=5)]
    assert {e.metadata.actor for e in events} == {"teller"}


async def test_saving_a_new_aggregate_creates_its_stream(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    account = Account.blank("1")
    account.open("ann")
    await repo.save(account)
    assert (await repo.get("1")).owner == "ann"
    again = Account.blank("1")
    again.open("bob")
    with pytest.raises(WrongExpectedVersionError):
        await repo.save(again)  # the stream exists: a new aggregate cannot claim it
    assert (await repo.get("1")).owner == "ann"


async def test_saving_without_pending_events_writes_nothing(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    await repo.save(await repo.get("1"))
    await repo.update("1", lambda a: None)
    assert (await store.stream_info("account-1")).version == 1


async def test_saving_a_stale_aggregate_is_refused(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    first, second = await repo.get("1"), await repo.get("1")
    first.deposit(10)
    await repo.save(first)
    second.deposit(99)
    with pytest.raises(WrongExpectedVersionError) as info:
        await repo.save(second)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("account-1", 1, 2)
    assert (await repo.get("1")).balance == 10


async def test_a_command_that_raises_saves_nothing(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    with pytest.raises(InsufficientFunds):
        await repo.update("1", lambda a: a.withdraw(1))
    assert (await store.stream_info("account-1")).version == 1


async def test_update_stores_the_metadata_it_is_given(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await repo.update("1", lambda a: a.open("ann"), create=True, metadata={"tenant": "t1"})
    (event,) = [e async for e in store.read_stream("account-1")]
    assert event.metadata.tenant == "t1"


# --- Conflicts and retries -----------------------------------------------------------------


async def test_update_retries_a_command_when_another_writer_saved_first(
    store: AsyncEventStore,
) -> None:
    await open_account(AsyncRepository(store, Account))
    repo = AsyncRepository(interfering(store, MoneyDeposited(amount=100)), Account)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.balance)
        account.deposit(5)

    await repo.update("1", command)
    assert seen == [0, 100]  # the second attempt ran on the other writer's state
    assert await data_of(store, "account-1") == [
        AccountOpened(owner="ann"),
        MoneyDeposited(amount=100),
        MoneyDeposited(amount=5),
    ]
    assert (await repo.get("1")).balance == 105


async def test_update_gives_up_after_its_attempts(store: AsyncEventStore) -> None:
    await open_account(AsyncRepository(store, Account))
    repo = AsyncRepository(
        interfering(store, MoneyDeposited(amount=1), times=10), Account, attempts=3
    )
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.version)
        account.deposit(5)

    with pytest.raises(WrongExpectedVersionError):
        await repo.update("1", command)
    assert seen == [1, 2, 3]
    assert (await AsyncRepository(store, Account).get("1")).balance == 3


async def test_update_with_one_attempt_does_not_retry(store: AsyncEventStore) -> None:
    await open_account(AsyncRepository(store, Account))
    repo = AsyncRepository(interfering(store, MoneyDeposited(amount=1)), Account, attempts=1)
    with pytest.raises(WrongExpectedVersionError):
        await repo.update("1", lambda a: a.deposit(5))
    assert (await AsyncRepository(store, Account).get("1")).balance == 1


async def test_a_retried_command_that_now_fails_saves_nothing(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    await deposit(repo, 10)
    racing = AsyncRepository(interfering(store, MoneyWithdrawn(amount=10)), Account)
    with pytest.raises(InsufficientFunds):
        await racing.update("1", lambda a: a.withdraw(10))
    assert (await repo.get("1")).balance == 0
    assert (await store.stream_info("account-1")).version == 3


# --- Snapshots -----------------------------------------------------------------------------


async def snapshot_version(store: AsyncEventStore) -> int | None:
    snapshot = await store.load_snapshot("account-1")
    return None if snapshot is None else snapshot.version


async def test_a_snapshot_is_taken_when_a_save_crosses_a_multiple_of_snapshot_every(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account, snapshot_every=3)
    await open_account(repo)
    await deposit(repo, 1)
    assert await snapshot_version(store) is None  # at version 2
    await deposit(repo, 1)
    assert await snapshot_version(store) == 3
    await deposit(repo, 1, times=2)
    assert await snapshot_version(store) == 3  # at version 5
    account = await repo.get("1")
    for _ in range(4):
        account.deposit(1)
    await repo.save(account)  # 5 -> 9 crosses 6 and 9: one snapshot, at the end
    snapshot = await store.load_snapshot("account-1")
    assert snapshot is not None and snapshot.version == 9
    assert json.loads(snapshot.state)["balance"] == 8


async def test_without_snapshot_every_no_snapshot_is_taken(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await open_account(repo)
    await deposit(repo, 1, times=5)
    assert await snapshot_version(store) is None


async def test_loading_uses_the_snapshot_and_then_only_the_tail(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account, snapshot_every=10)
    await open_account(repo)
    await deposit(repo, 1, times=24)
    snapshot = await store.load_snapshot("account-1")
    assert snapshot is not None and snapshot.version == 20
    # Mark the snapshot's state: if loading used it, the balance shows the mark.
    state = json.loads(snapshot.state)
    assert state["balance"] == 19
    await store.delete_snapshot("account-1")
    marked = json.dumps({**state, "balance": 1019})
    await store.save_snapshot(Snapshot("account-1", 20, "Account", 1, marked, snapshot.event_id))
    loaded = await repo.get("1")
    assert (loaded.balance, loaded.version) == (1024, 25)
    assert (await AsyncRepository(store, Account).get("1")).balance == 24  # a full replay


async def test_a_deleted_snapshot_means_a_full_replay(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account, snapshot_every=3)
    await open_account(repo)
    await deposit(repo, 2, times=7)
    await store.delete_snapshot("account-1")
    loaded = await repo.get("1")
    assert (loaded.balance, loaded.version) == (14, 8)


@pytest.mark.parametrize(
    ("version", "state_type", "schema_version", "state"),
    [
        (2, "Account", 99, '{"id": "1", "balance": 1000}'),
        (2, "Account", 1, '{"balance": "lots"}'),
        (2, "SomethingElse", 1, '{"id": "1", "balance": 1000}'),
        (2, "Account", 1, '{"id": "2", "balance": 1000}'),
    ],
    ids=["other-schema-version", "invalid-state", "other-class", "another-aggregates-state"],
)
async def test_an_unusable_snapshot_is_ignored(
    store: AsyncEventStore, version: int, state_type: str, schema_version: int, state: str
) -> None:
    repo = AsyncRepository(store, Account, snapshot_every=100)
    await open_account(repo)
    await deposit(repo, 3, times=2)
    at = [e async for e in store.read_stream("account-1", from_version=version, limit=1)]
    bound = Snapshot("account-1", version, state_type, schema_version, state, at[0].event_id)
    await store.save_snapshot(bound)
    loaded = await repo.get("1")
    assert (loaded.balance, loaded.version) == (6, 3)


async def test_a_snapshot_from_before_a_restore_is_not_trusted(store: AsyncEventStore) -> None:
    """Same version, another event there: the snapshot is stale and a full replay runs."""
    repo = AsyncRepository(store, Account, snapshot_every=100)
    await open_account(repo)
    await deposit(repo, 3, times=2)
    stale = Snapshot("account-1", 3, "Account", 1, '{"id": "1", "balance": 1000}', uuid7())
    await store.save_snapshot(stale)
    loaded = await repo.get("1")
    assert (loaded.balance, loaded.version) == (6, 3)


# --- Inside a transaction ----------------------------------------------------------------


class Abort(Exception):
    """Ends a transaction block the way an application error would."""


async def test_repositories_commit_and_roll_back_with_the_transaction(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account, snapshot_every=1)
    counters = AsyncDeciderRepository(store, CounterDecider())

    async def open_and_count(fail: bool) -> None:
        async with store.transaction() as tx:
            await repo.update("1", lambda a: a.open("ann"), create=True, conn=tx)
            await counters.handle("c1", Increment(by=1), conn=tx)
            if fail:
                raise Abort

    with pytest.raises(Abort):
        await open_and_count(fail=True)
    assert await repo.get_or_none("1") is None
    assert await store.load_snapshot("account-1") is None
    assert not (await store.stream_info("counter-c1")).exists
    await open_and_count(fail=False)
    assert (await repo.get("1")).owner == "ann"
    assert await snapshot_version(store) == 1
    assert (await counters.load("c1"))[0] == 1


# --- Deciders ------------------------------------------------------------------------------


async def test_decider_handle_appends_the_decided_events(store: AsyncEventStore) -> None:
    repo = AsyncDeciderRepository(store, CounterDecider())
    await repo.handle("c1", Increment(by=2))
    await repo.handle("c1", Increment(by=5), metadata={"actor": "ann"})
    state, info = await repo.load("c1")
    assert (state, info.stream_id, info.exists, info.version) == (7, "counter-c1", True, 2)
    events = [e async for e in store.read_stream("counter-c1")]
    assert [e.data for e in events] == [Incremented(by=2), Incremented(by=5)]
    assert [e.metadata.actor for e in events] == [None, "ann"]


async def test_decider_load_of_a_missing_entity_is_the_initial_state(
    store: AsyncEventStore,
) -> None:
    state, info = await AsyncDeciderRepository(store, CounterDecider()).load("c1")
    assert (state, info.exists, info.version) == (0, False, 0)


async def test_decider_handle_of_a_refused_command_appends_nothing(
    store: AsyncEventStore,
) -> None:
    repo = AsyncDeciderRepository(store, CounterDecider())
    await repo.handle("c1", Increment(by=8))
    with pytest.raises(ValueError, match="limit"):
        await repo.handle("c1", Increment(by=3))
    await repo.handle("c1", Increment(by=0))  # decides nothing
    assert (await store.stream_info("counter-c1")).version == 1


async def test_decider_handle_retries_when_another_writer_appended_first(
    store: AsyncEventStore,
) -> None:
    repo = AsyncDeciderRepository(interfering(store, Incremented(by=1)), CounterDecider())
    await repo.handle("c1", Increment(by=2))
    assert await data_of(store, "counter-c1") == [Incremented(by=1), Incremented(by=2)]


async def test_decider_handle_decides_again_on_the_state_another_writer_left(
    store: AsyncEventStore,
) -> None:
    repo = AsyncDeciderRepository(interfering(store, Incremented(by=1)), CounterDecider())
    with pytest.raises(ValueError, match="limit"):
        await repo.handle("c1", Increment(by=5, limit=5))
    assert await data_of(store, "counter-c1") == [Incremented(by=1)]


async def test_decider_handle_gives_up_after_its_attempts(store: AsyncEventStore) -> None:
    noisy = interfering(store, Incremented(by=0), times=10)
    repo = AsyncDeciderRepository(noisy, CounterDecider(), attempts=2)
    with pytest.raises(WrongExpectedVersionError):
        await repo.handle("c1", Increment(by=1))
    assert await data_of(store, "counter-c1") == [Incremented(by=0), Incremented(by=0)]
