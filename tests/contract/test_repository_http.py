# Generated from test_repository_http_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
# ruff: noqa: SIM117
"""Repositories for HTTP APIs over every store: expected versions, idempotency keys,
create-only commands, loads as of a version, observable retries, the serialising mode.

Written async; `test_repository_http.py` is generated from it (see `tests/contract/conftest.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, cast

import pytest

from eventstore import (
    NO_STREAM,
    AggregateNotFoundError,
    AppendResult,
    DeciderRepository,
    Event,
    EventRegistry,
    EventStore,
    InvalidArgumentError,
    Repository,
    WrongExpectedVersionError,
)
from eventstore.aggregates import Retry, idempotent_event_ids, repository
from eventstore.demo.bank import (
    Account,
    AccountClosed,
    AccountOpened,
    InsufficientFunds,
    MoneyDeposited,
    MoneyWithdrawn,
)


class Counted(Event):
    event_type: ClassVar[str] = "tally.Counted"
    by: int


@dataclasses.dataclass(frozen=True)
class Count:
    by: int


class TallyDecider:
    category = "tally"

    def initial_state(self) -> int:
        return 0

    def decide(self, command: Count, state: int) -> Sequence[Event]:
        if command.by < 0 and state + command.by < 0:
            raise ValueError("below zero")
        return [Counted(by=command.by)]

    def evolve(self, state: int, event: Event) -> int:
        return state + event.by if isinstance(event, Counted) else state


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return EventRegistry([AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed, Counted])


class InterferingStore:
    """Wraps a store: before each of its first ``times`` appends, another writer appends."""

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


def opened(store: EventStore, deposits: int = 0) -> Repository[Account]:
    repo = Repository(store, Account)
    repo.create("1", lambda a: a.open("ann"))
    for _ in range(deposits):
        repo.update("1", lambda a: a.deposit(10))
    return repo


def version_of(store: EventStore, stream_id: str = "account-1") -> int:
    return (store.stream_info(stream_id)).version


# --- Expected versions (If-Match) --------------------------------------------------------


def test_update_at_the_expected_version_runs(store: EventStore) -> None:
    repo = opened(store, deposits=1)
    result = repo.update("1", lambda a: a.deposit(5), expected_version=2)
    assert result.append is not None and result.append.last_version == 3
    assert (repo.get("1")).balance == 15


def test_update_at_another_version_is_refused_without_running(
    store: EventStore,
) -> None:
    repo = opened(store, deposits=2)
    ran: list[int] = []
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.update("1", lambda a: ran.append(a.version), expected_version=2)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("account-1", 2, 3)
    assert ran == []
    assert version_of(store) == 3


def test_update_with_an_expected_version_is_not_retried(store: EventStore) -> None:
    opened(store)
    repo = Repository(interfering(store, MoneyDeposited(amount=1)), Account)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.version)
        account.deposit(5)

    with pytest.raises(WrongExpectedVersionError):
        repo.update("1", command, expected_version=1)
    assert seen == [1]
    assert repo.retries == 0
    assert (repo.get("1")).balance == 1  # only the other writer's deposit


def test_expected_version_zero_means_a_new_aggregate(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.update("1", lambda a: a.open("ann"), create=True, expected_version=0)
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.update("1", lambda a: a.open("bob"), create=True, expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert (repo.get("1")).owner == "ann"


def test_update_of_a_missing_aggregate_with_an_expected_version_is_not_found(
    store: EventStore,
) -> None:
    with pytest.raises(AggregateNotFoundError):
        Repository(store, Account).update("9", lambda a: None, expected_version=3)


def test_save_at_another_version_than_loaded_is_refused(store: EventStore) -> None:
    repo = opened(store, deposits=1)
    account = repo.get("1")
    account.deposit(1)
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.save(account, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    repo.save(account, expected_version=2)
    assert version_of(store) == 3


@pytest.mark.parametrize("bad", [-1, True])
def test_an_invalid_expected_version_is_refused(store: EventStore, bad: int) -> None:
    repo = opened(store)
    with pytest.raises(InvalidArgumentError):
        repo.update("1", lambda a: a.deposit(1), expected_version=bad)
    assert version_of(store) == 1


# --- Create-only ---------------------------------------------------------------------------


def test_create_starts_a_new_stream(store: EventStore) -> None:
    result = Repository(store, Account).create("1", lambda a: a.open("ann"))
    assert result.append is not None and result.append.first_version == 1
    assert (result.aggregate.owner, result.aggregate.version) == ("ann", 1)


def test_create_of_an_existing_aggregate_is_refused_without_running(
    store: EventStore,
) -> None:
    repo = opened(store, deposits=1)
    ran: list[str] = []
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.create("1", lambda a: ran.append(a.id))
    assert (info.value.expected, info.value.actual) == (NO_STREAM, 2)
    assert ran == []
    assert repo.retries == 0


# --- Idempotency keys ----------------------------------------------------------------------


def test_a_repeated_key_returns_the_original_result_and_appends_nothing(
    store: EventStore,
) -> None:
    repo = opened(store)
    runs: list[int] = []

    def command(account: Account) -> None:
        runs.append(account.version)
        account.deposit(7)
        account.deposit(3)

    first = repo.update("1", command, idempotency_key="k-1")
    again = repo.update("1", command, idempotency_key="k-1")
    assert runs == [1]
    assert first.append is not None and again.append is not None
    assert again.append.repeated and not first.append.repeated
    assert (again.append.first_version, again.append.last_version) == (2, 3)
    assert again.append.positions == first.append.positions
    assert again.append.event_ids == first.append.event_ids
    assert again.append.event_ids == idempotent_event_ids("k-1", "account-1", 2)
    assert again.events == first.events
    assert (again.aggregate.balance, again.aggregate.version) == (10, 3)
    assert version_of(store) == 3


def test_a_repeated_key_after_other_writes_returns_the_state_of_then(
    store: EventStore,
) -> None:
    repo = opened(store)
    repo.update("1", lambda a: a.deposit(50), idempotency_key="k-1")
    repo.update("1", lambda a: a.withdraw(50))  # now the command would fail
    again = repo.update("1", lambda a: a.deposit(50), idempotency_key="k-1")
    assert again.append is not None and again.append.repeated
    assert (again.aggregate.balance, again.aggregate.version) == (50, 2)
    assert version_of(store) == 3


def test_another_key_runs_the_command_again(store: EventStore) -> None:
    repo = opened(store)
    repo.update("1", lambda a: a.deposit(5), idempotency_key="k-1")
    result = repo.update("1", lambda a: a.deposit(5), idempotency_key="k-2")
    assert result.append is not None and not result.append.repeated
    assert (repo.get("1")).balance == 10


def test_a_key_is_scoped_to_its_stream(store: EventStore) -> None:
    repo = Repository(store, Account)
    repo.create("1", lambda a: a.open("ann"), idempotency_key="k")
    result = repo.create("2", lambda a: a.open("bob"), idempotency_key="k")
    assert result.append is not None and not result.append.repeated
    assert (repo.get("2")).owner == "bob"


def test_a_repeated_create_returns_the_original_result(store: EventStore) -> None:
    repo = Repository(store, Account)
    first = repo.create("1", lambda a: a.open("ann"), idempotency_key="c")
    again = repo.create("1", lambda a: a.open("ann"), idempotency_key="c")
    assert again.append is not None and again.append.repeated
    assert first.append is not None and again.append.positions == first.append.positions
    with pytest.raises(WrongExpectedVersionError):
        repo.create("1", lambda a: a.open("ann"), idempotency_key="other")
    assert version_of(store) == 1


def test_a_keyed_command_that_fails_can_be_retried_with_its_key(
    store: EventStore,
) -> None:
    repo = opened(store)
    with pytest.raises(InsufficientFunds):
        repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")
    repo.update("1", lambda a: a.deposit(5))
    result = repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")
    assert result.append is not None and not result.append.repeated
    assert (repo.get("1")).balance == 0


def test_a_keyed_command_retried_on_a_conflict_appends_once(
    store: EventStore,
) -> None:
    opened(store)
    repo = Repository(interfering(store, MoneyDeposited(amount=1)), Account)
    result = repo.update("1", lambda a: a.deposit(5), idempotency_key="k")
    assert result.append is not None and result.append.last_version == 3
    assert repo.retries == 1
    assert (repo.get("1")).balance == 6


def test_a_repeat_older_than_the_snapshot_is_still_recognised(
    store: EventStore,
) -> None:
    repo = Repository(store, Account, snapshot_every=2)
    repo.create("1", lambda a: a.open("ann"))
    first = repo.update("1", lambda a: a.deposit(5), idempotency_key="d")  # v2
    spent = repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")  # v3
    for _ in range(3):
        repo.update("1", lambda a: a.deposit(1))  # v6, a snapshot at 6
    assert store.load_snapshot("account-1") is not None
    # Its ids turn out to be stored: the deposit would succeed, the append is refused.
    again = repo.update("1", lambda a: a.deposit(5), idempotency_key="d")
    # The withdrawal would now fail (a balance of 3).
    spent_again = repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")
    for original, repeat in [(first, again), (spent, spent_again)]:
        assert original.append is not None and repeat.append is not None
        assert repeat.append.repeated and repeat.append.positions == original.append.positions
        assert repeat.aggregate.version == original.aggregate.version
    assert (again.aggregate.balance, spent_again.aggregate.balance) == (5, 0)
    assert version_of(store) == 6
    with pytest.raises(InsufficientFunds):  # a new key: no repeat to fall back on
        repo.update("1", lambda a: a.withdraw(5), idempotency_key="w2")


def test_save_with_event_ids_is_idempotent_at_the_same_version(
    store: EventStore,
) -> None:
    repo = opened(store)
    ids = idempotent_event_ids("s", "account-1", 1)
    first, second = repo.get("1"), repo.get("1")
    first.deposit(4)
    second.deposit(4)
    original = repo.save(first, event_ids=ids)
    repeat = repo.save(second, event_ids=ids)
    assert repeat.append is not None and repeat.append.repeated
    assert original.append is not None and repeat.append.positions == original.append.positions
    assert version_of(store) == 2


def test_save_takes_event_ids_or_a_key_not_both(store: EventStore) -> None:
    repo = opened(store)
    account = repo.get("1")
    account.deposit(1)
    with pytest.raises(InvalidArgumentError):
        repo.save(account, event_ids=idempotent_event_ids("a", "account-1", 1), idempotency_key="a")
    with pytest.raises(InvalidArgumentError):
        repo.save(account, idempotency_key="")
    assert version_of(store) == 1


# --- Loading as of a version -----------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [None, 2])
def test_get_as_of_a_version(store: EventStore, snapshot_every: int | None) -> None:
    opened(store, deposits=4)  # balances 10, 20, 30, 40 at versions 2..5
    repo = Repository(store, Account, snapshot_every=snapshot_every)
    repo.update("1", lambda a: a.deposit(10))  # version 6, a snapshot at 6 if any
    for version, balance in [(1, 0), (3, 20), (5, 40), (6, 50)]:
        account = repo.get("1", version=version)
        assert (account.version, account.balance) == (version, balance)
        assert account.pending_events == ()
    assert (repo.get("1")).balance == 50


def test_get_beyond_the_last_version_is_not_found(store: EventStore) -> None:
    repo = opened(store, deposits=1)
    assert repo.get_or_none("1", version=3) is None
    with pytest.raises(AggregateNotFoundError):
        repo.get("1", version=3)
    with pytest.raises(InvalidArgumentError):
        repo.get("1", version=0)


def test_decider_load_as_of_a_version(store: EventStore) -> None:
    repo = DeciderRepository(store, TallyDecider())
    for by in (1, 2, 4):
        repo.handle("t", Count(by=by))
    state, info = repo.load("t", version=2)
    assert (state, info.version, info.exists) == (3, 2, True)
    with pytest.raises(AggregateNotFoundError):
        repo.load("t", version=4)


# --- Deciders: expected versions and keys ----------------------------------------------------


def test_decider_handle_with_expected_version(store: EventStore) -> None:
    repo = DeciderRepository(store, TallyDecider())
    repo.handle("t", Count(by=1), expected_version=0)
    with pytest.raises(WrongExpectedVersionError) as info:
        repo.handle("t", Count(by=1), expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    repo.handle("t", Count(by=2), expected_version=1)
    assert (repo.load("t"))[0] == 3


def test_decider_handle_with_a_repeated_key(store: EventStore) -> None:
    repo = DeciderRepository(store, TallyDecider())
    first = repo.handle("t", Count(by=5), idempotency_key="k")
    repo.handle("t", Count(by=-5))
    again = repo.handle("t", Count(by=5), idempotency_key="k")
    assert again.append is not None and again.append.repeated
    assert first.append is not None and again.append.positions == first.append.positions
    assert (again.state, again.events) == (5, (Counted(by=5),))
    assert (store.stream_info("tally-t")).version == 2


# --- Observable retries ----------------------------------------------------------------------


def test_retries_are_logged_counted_and_reported(
    store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    opened(store)
    seen: list[Retry] = []
    repo = Repository(
        interfering(store, MoneyDeposited(amount=1), times=2), Account, on_retry=seen.append
    )
    with caplog.at_level(logging.DEBUG, logger="eventstore.repository"):
        repo.update("1", lambda a: a.deposit(5))
    assert [(r.stream_id, r.attempt) for r in seen] == [("account-1", 1), ("account-1", 2)]
    assert all(isinstance(r.error, WrongExpectedVersionError) for r in seen)
    assert repo.retries == 2
    records = [r for r in caplog.records if r.name == "eventstore.repository"]
    assert [(r.levelno, getattr(r, "attempt", None)) for r in records] == [
        (logging.DEBUG, 1),
        (logging.DEBUG, 2),
    ]


def test_decider_retries_are_counted_and_reported(store: EventStore) -> None:
    seen: list[Retry] = []
    repo = DeciderRepository(
        interfering(store, Counted(by=1)), TallyDecider(), on_retry=seen.append
    )
    repo.handle("t", Count(by=2))
    assert [(r.stream_id, r.attempt) for r in seen] == [("tally-t", 1)]
    assert repo.retries == 1


# --- The serialising mode --------------------------------------------------------------------


def test_serialized_commands_load_and_save_in_one_transaction(
    store: EventStore,
) -> None:
    repo = Repository(store, Account, serialize=True)
    repo.create("1", lambda a: a.open("ann"))
    for _ in range(3):
        repo.update("1", lambda a: a.deposit(2))
    tally = DeciderRepository(store, TallyDecider(), serialize=True)
    tally.handle("t", Count(by=3))
    assert (repo.get("1")).balance == 6
    assert (tally.load("t"))[0] == 3
    assert repo.retries == tally.retries == 0


def test_serialized_commands_still_retry_on_writers_that_take_no_lock(
    store: EventStore,
) -> None:
    opened(store)
    repo = Repository(interfering(store, MoneyDeposited(amount=1)), Account, serialize=True)
    repo.update("1", lambda a: a.deposit(5))
    assert repo.retries == 1
    # The other writer's deposit of 1 is kept on Postgres (its own connection) and undone
    # in memory (there it joined the serialised command's transaction, which rolled back).
    account = Repository(store, Account).get("1")
    assert account.balance == 5 + (account.version - 2)


class LateWriterStore:
    """Wraps a store: another writer appends just before the lock is taken."""

    def __init__(self, store: EventStore, event: Event) -> None:
        self.store = store
        self.event = event

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def lock_stream(self, stream_id: str, **kwargs: Any) -> None:
        self.store.append(stream_id, self.event)
        self.store.lock_stream(stream_id, **kwargs)


def test_serialized_commands_catch_up_after_the_lock_without_retrying(
    store: EventStore,
) -> None:
    opened(store)
    late = cast(EventStore, LateWriterStore(store, MoneyDeposited(amount=100)))
    repo = Repository(late, Account, serialize=True)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.balance)
        account.deposit(5)

    result = repo.update("1", command)
    assert (seen, repo.retries) == ([100], 0)
    assert (result.aggregate.balance, result.aggregate.version) == (105, 3)
    tally = DeciderRepository(
        cast(EventStore, LateWriterStore(store, Counted(by=10))),
        TallyDecider(),
        serialize=True,
    )
    decided = tally.handle("t", Count(by=-5))  # only possible after the late 10
    assert (decided.state, tally.retries) == (5, 0)
    assert (Repository(store, Account).get("1")).balance == 105


class ReadRecorder:
    """Wraps a store: records where its lean reads (loads and catch-ups) start."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.reads: list[int | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: Any = None
    ) -> Any:
        self.reads.append(from_version)
        return self.store.read_stream_data(stream_id, from_version=from_version, conn=conn)


def test_serialized_commands_catch_up_from_the_copy_they_kept(
    store: EventStore,
) -> None:
    opened(store)
    recorder = ReadRecorder(store)
    repo = Repository(cast(EventStore, recorder), Account, serialize=True)
    first = repo.update("1", lambda a: a.deposit(5))
    first.aggregate.deposit(1000)  # the caller's aggregate, not the copy kept
    Repository(store, Account).update("1", lambda a: a.deposit(7))
    recorder.reads.clear()
    result = repo.update("1", lambda a: a.deposit(1))
    # No load: one read, from the version the copy was kept at, under the lock.
    assert recorder.reads == [2]
    assert (result.aggregate.balance, result.aggregate.version) == (13, 4)
    assert (Repository(store, Account).get("1")).balance == 13


def test_serialized_commands_keep_copies_of_their_latest_aggregates_only(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "WARM_AGGREGATES", 2)
    recorder = ReadRecorder(store)
    repo = Repository(cast(EventStore, recorder), Account, serialize=True)
    for name in ("a", "b", "c"):
        repo.create(name, lambda a: a.open("ann"))
    recorder.reads.clear()
    repo.update("a", lambda a: a.deposit(1))  # no copy left: load, then catch up
    assert recorder.reads == [1, 1]
    recorder.reads.clear()
    repo.update("c", lambda a: a.deposit(1))
    assert recorder.reads == [1]


def test_serialized_commands_keep_no_copy_of_an_aggregate_that_does_not_exist(
    store: EventStore,
) -> None:
    repo = Repository(store, Account, serialize=True)
    assert (repo.update("9", lambda a: None, create=True)).append is None
    with pytest.raises(AggregateNotFoundError):
        repo.update("9", lambda a: a.deposit(1))


def test_serialized_commands_join_the_callers_transaction(store: EventStore) -> None:
    repo = Repository(store, Account, serialize=True)
    repo.create("1", lambda a: a.open("ann"))

    class Abort(Exception):
        pass

    def deposit_then_abort() -> None:
        with store.transaction() as tx:
            repo.update("1", lambda a: a.deposit(9), conn=tx)
            raise Abort

    with pytest.raises(Abort):
        deposit_then_abort()
    assert (repo.get("1")).balance == 0
    with store.transaction() as tx:
        repo.update("1", lambda a: a.deposit(9), conn=tx)
    assert (repo.get("1")).balance == 9


def test_lock_stream_checks_the_stream_id(store: EventStore) -> None:
    with store.transaction() as tx:
        with pytest.raises(InvalidArgumentError):
            store.lock_stream("", conn=tx)
