# Generated from test_repositories_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
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
    DeciderRepository,
    Event,
    EventRegistry,
    EventStore,
    Repository,
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

    def __init__(self, store: EventStore, event: Event, times: int) -> None:
        self.store = store
        self.event = event
        self.times = times

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append(self, stream_id: str, events: Any, **kwargs: Any) -> AppendResult:
        if self.times > 0:
            self.times -= 1
            self.store.append(stream_id, self.event)
        return self.store.append(stream_id, events, **kwargs)


def interfering(store: EventStore, event: Event, times: int = 1) -> EventStore:
    return cast(EventStore, InterferingStore(store, event, times))


def data_of(store: EventStore, stream_id: str) -> list[Event]:
    return [event for _, event in store.read_stream_data(stream_id)]


def open_account(repo: Repository[Account], account_id: str = "1") -> None:
    repo.update(account_id, lambda a: a.open("ann"), create=True)


def deposit(repo: Repository[Account], amount: int, times: int = 1) -> None:
    for _ in range(times):
        repo.update("1", lambda a: a.deposit(amount))


# --- Loading and saving aggregates ---------------------------------------------------------


def test_update_with_create_starts_a_new_aggregate(store: EventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    account = repo.get("1")
    assert (account.id, account.owner, account.version) == ("1", "ann", 1)
    assert data_of(store, "account-1") == [AccountOpened(owner="ann")]


def test_get_rebuilds_the_aggregate_from_all_its_events(store: EventStore) -> None:
    store.append(
        "account-1",
        [AccountOpened(owner="bob"), MoneyDeposited(amount=50), MoneyWithdrawn(amount=20)],
    )
    account = Repository(store, Account).get("1")
    assert (account.owner, account.balance, account.version) == ("bob", 30, 3)
    assert account.pending_events == ()


def test_a_missing_aggregate_is_not_found(store: EventStore) -> None:
    repo = Repository(store, Account)
    assert repo.get_or_none("nobody") is None
    with pytest.raises(AggregateNotFoundError) as info:
        repo.get("nobody")
    assert (info.value.aggregate, info.value.aggregate_id) == ("Account", "nobody")
    assert isinstance(info.value, LookupError)


def test_a_stored_event_the_aggregate_has_no_handler_for_is_a_clear_error(
    store: EventStore,
) -> None:
    store.append(
        "account-1", [AccountOpened(owner="ann"), Incremented(by=1), MoneyDeposited(amount=5)]
    )
    with pytest.raises(AggregateError, match=r"Account has no @applies handler for Incremented"):
        Repository(store, Account).get("1")


def test_update_of_a_missing_aggregate_is_not_found_without_create(
    store: EventStore,
) -> None:
    repo = Repository(store, Account)
    with pytest.raises(AggregateNotFoundError):
        repo.update("nobody", lambda a: a.open("ann"))
    assert not (store.stream_info("account-nobody")).exists


def test_save_appends_the_pending_events_after_the_loaded_version(
    store: EventStore,
) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    account = repo.get("1")
    account.deposit(10)
    account.deposit(5)
    repo.save(account, metadata={"actor": "teller"})
    assert (repo.get("1")).balance == 15
    assert (store.stream_info("account-1")).version == 3
    events = [e for e in store.read_stream("account-1", from_version=2)]
    assert [e.data for e in events] == [MoneyDeposited(amount=10), MoneyDeposited(amount=5)]
    assert {e.metadata.actor for e in events} == {"teller"}


def test_saving_a_new_aggregate_creates_its_stream(store: EventStore) -> None:
    repo = Repository(store, Account)
    account = Account.blank("1")
    account.open("ann")
    repo.save(account)
    assert (repo.get("1")).owner == "ann"
    again = Account.blank("1")
    again.open("bob")
    with pytest.raises(WrongExpectedVersionError):
        repo.save(again)  # the stream exists: a new aggregate cannot claim it
    assert (repo.get("1")).owner == "ann"


def test_saving_without_pending_events_writes_nothing(store: EventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    repo.save(repo.get("1"))
    repo.update("1", lambda a: None)
    assert (store.stream_info("account-1")).version == 1


def test_saving_a_stale_aggregate_is_refused(store: EventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    first, second = repo.get("1"), repo.get("1")
    first.deposit(10)
    repo.save(first)
    second.deposit(99)
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.save(second)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("account-1", 1, 2)
    assert (repo.get("1")).balance == 10


def test_a_command_that_raises_saves_nothing(store: EventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    with pytest.raises(InsufficientFunds):
        repo.update("1", lambda a: a.withdraw(1))
    assert (store.stream_info("account-1")).version == 1


def test_update_stores_the_metadata_it_is_given(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.update("1", lambda a: a.open("ann"), create=True, metadata={"tenant": "t1"})
    (event,) = [e for e in store.read_stream("account-1")]
    assert event.metadata.tenant == "t1"


# --- Conflicts and retries -----------------------------------------------------------------


def test_update_retries_a_command_when_another_writer_saved_first(
    store: EventStore,
) -> None:
    open_account(Repository(store, Account))
    repo = Repository(interfering(store, MoneyDeposited(amount=100)), Account)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.balance)
        account.deposit(5)

    repo.update("1", command)
    assert seen == [0, 100]  # the second attempt ran on the other writer's state
    assert data_of(store, "account-1") == [
        AccountOpened(owner="ann"),
        MoneyDeposited(amount=100),
        MoneyDeposited(amount=5),
    ]
    assert (repo.get("1")).balance == 105


def test_update_gives_up_after_its_attempts(store: EventStore) -> None:
    open_account(Repository(store, Account))
    repo = Repository(interfering(store, MoneyDeposited(amount=1), times=10), Account, attempts=3)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.version)
        account.deposit(5)

    with pytest.raises(WrongExpectedVersionError):
        repo.update("1", command)
    assert seen == [1, 2, 3]
    assert (Repository(store, Account).get("1")).balance == 3


def test_update_with_one_attempt_does_not_retry(store: EventStore) -> None:
    open_account(Repository(store, Account))
    repo = Repository(interfering(store, MoneyDeposited(amount=1)), Account, attempts=1)
    with pytest.raises(WrongExpectedVersionError):
        repo.update("1", lambda a: a.deposit(5))
    assert (Repository(store, Account).get("1")).balance == 1


def test_a_retried_command_that_now_fails_saves_nothing(store: EventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    deposit(repo, 10)
    racing = Repository(interfering(store, MoneyWithdrawn(amount=10)), Account)
    with pytest.raises(InsufficientFunds):
        racing.update("1", lambda a: a.withdraw(10))
    assert (repo.get("1")).balance == 0
    assert (store.stream_info("account-1")).version == 3


# --- Snapshots -----------------------------------------------------------------------------


def snapshot_version(store: EventStore) -> int | None:
    snapshot = store.load_snapshot("account-1")
    return None if snapshot is None else snapshot.version


def test_a_snapshot_is_taken_when_a_save_crosses_a_multiple_of_snapshot_every(
    store: EventStore,
) -> None:
    repo = Repository(store, Account, snapshot_every=3)
    open_account(repo)
    deposit(repo, 1)
    assert snapshot_version(store) is None  # at version 2
    deposit(repo, 1)
    assert snapshot_version(store) == 3
    deposit(repo, 1, times=2)
    assert snapshot_version(store) == 3  # at version 5
    account = repo.get("1")
    for _ in range(4):
        account.deposit(1)
    repo.save(account)  # 5 -> 9 crosses 6 and 9: one snapshot, at the end
    snapshot = store.load_snapshot("account-1")
    assert snapshot is not None and snapshot.version == 9
    assert json.loads(snapshot.state)["balance"] == 8


def test_without_snapshot_every_no_snapshot_is_taken(store: EventStore) -> None:
    repo = Repository(store, Account)
    open_account(repo)
    deposit(repo, 1, times=5)
    assert snapshot_version(store) is None


def test_loading_uses_the_snapshot_and_then_only_the_tail(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=10)
    open_account(repo)
    deposit(repo, 1, times=24)
    snapshot = store.load_snapshot("account-1")
    assert snapshot is not None and snapshot.version == 20
    # Mark the snapshot's state: if loading used it, the balance shows the mark.
    state = json.loads(snapshot.state)
    assert state["balance"] == 19
    store.delete_snapshot("account-1")
    marked = json.dumps({**state, "balance": 1019})
    store.save_snapshot(Snapshot("account-1", 20, "Account", 1, marked, snapshot.event_id))
    loaded = repo.get("1")
    assert (loaded.balance, loaded.version) == (1024, 25)
    assert (Repository(store, Account).get("1")).balance == 24  # a full replay


def test_a_deleted_snapshot_means_a_full_replay(store: EventStore) -> None:
    repo = Repository(store, Account, snapshot_every=3)
    open_account(repo)
    deposit(repo, 2, times=7)
    store.delete_snapshot("account-1")
    loaded = repo.get("1")
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
def test_an_unusable_snapshot_is_ignored(
    store: EventStore, version: int, state_type: str, schema_version: int, state: str
) -> None:
    repo = Repository(store, Account, snapshot_every=100)
    open_account(repo)
    deposit(repo, 3, times=2)
    at = [e for e in store.read_stream("account-1", from_version=version, limit=1)]
    bound = Snapshot("account-1", version, state_type, schema_version, state, at[0].event_id)
    store.save_snapshot(bound)
    loaded = repo.get("1")
    assert (loaded.balance, loaded.version) == (6, 3)


def test_a_snapshot_from_before_a_restore_is_not_trusted(store: EventStore) -> None:
    """Same version, another event there: the snapshot is stale and a full replay runs."""
    repo = Repository(store, Account, snapshot_every=100)
    open_account(repo)
    deposit(repo, 3, times=2)
    stale = Snapshot("account-1", 3, "Account", 1, '{"id": "1", "balance": 1000}', uuid7())
    store.save_snapshot(stale)
    loaded = repo.get("1")
    assert (loaded.balance, loaded.version) == (6, 3)


# --- Inside a transaction ----------------------------------------------------------------


class Abort(Exception):
    """Ends a transaction block the way an application error would."""


def test_repositories_commit_and_roll_back_with_the_transaction(
    store: EventStore,
) -> None:
    repo = Repository(store, Account, snapshot_every=1)
    counters = DeciderRepository(store, CounterDecider())

    def open_and_count(fail: bool) -> None:
        with store.transaction() as tx:
            repo.update("1", lambda a: a.open("ann"), create=True, conn=tx)
            counters.handle("c1", Increment(by=1), conn=tx)
            if fail:
                raise Abort

    with pytest.raises(Abort):
        open_and_count(fail=True)
    assert repo.get_or_none("1") is None
    assert store.load_snapshot("account-1") is None
    assert not (store.stream_info("counter-c1")).exists
    open_and_count(fail=False)
    assert (repo.get("1")).owner == "ann"
    assert snapshot_version(store) == 1
    assert (counters.load("c1"))[0] == 1


# --- Deciders ------------------------------------------------------------------------------


def test_decider_handle_appends_the_decided_events(store: EventStore) -> None:
    repo = DeciderRepository(store, CounterDecider())
    repo.handle("c1", Increment(by=2))
    repo.handle("c1", Increment(by=5), metadata={"actor": "ann"})
    state, info = repo.load("c1")
    assert (state, info.stream_id, info.exists, info.version) == (7, "counter-c1", True, 2)
    events = [e for e in store.read_stream("counter-c1")]
    assert [e.data for e in events] == [Incremented(by=2), Incremented(by=5)]
    assert [e.metadata.actor for e in events] == [None, "ann"]


def test_decider_load_of_a_missing_entity_is_the_initial_state(
    store: EventStore,
) -> None:
    state, info = DeciderRepository(store, CounterDecider()).load("c1")
    assert (state, info.exists, info.version) == (0, False, 0)


def test_decider_handle_of_a_refused_command_appends_nothing(
    store: EventStore,
) -> None:
    repo = DeciderRepository(store, CounterDecider())
    repo.handle("c1", Increment(by=8))
    with pytest.raises(ValueError, match="limit"):
        repo.handle("c1", Increment(by=3))
    repo.handle("c1", Increment(by=0))  # decides nothing
    assert (store.stream_info("counter-c1")).version == 1


def test_decider_handle_retries_when_another_writer_appended_first(
    store: EventStore,
) -> None:
    repo = DeciderRepository(interfering(store, Incremented(by=1)), CounterDecider())
    repo.handle("c1", Increment(by=2))
    assert data_of(store, "counter-c1") == [Incremented(by=1), Incremented(by=2)]


def test_decider_handle_decides_again_on_the_state_another_writer_left(
    store: EventStore,
) -> None:
    repo = DeciderRepository(interfering(store, Incremented(by=1)), CounterDecider())
    with pytest.raises(ValueError, match="limit"):
        repo.handle("c1", Increment(by=5, limit=5))
    assert data_of(store, "counter-c1") == [Incremented(by=1)]


def test_decider_handle_gives_up_after_its_attempts(store: EventStore) -> None:
    noisy = interfering(store, Incremented(by=0), times=10)
    repo = DeciderRepository(noisy, CounterDecider(), attempts=2)
    with pytest.raises(WrongExpectedVersionError):
        repo.handle("c1", Increment(by=1))
    assert data_of(store, "counter-c1") == [Incremented(by=0), Incremented(by=0)]
