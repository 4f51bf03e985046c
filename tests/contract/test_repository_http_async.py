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
    AsyncDeciderRepository,
    AsyncEventStore,
    AsyncRepository,
    Event,
    EventRegistry,
    InvalidArgumentError,
    WrongExpectedVersionError,
)
from eventstore.aggregates import Retry, idempotent_event_ids, repository_async
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


async def opened(store: AsyncEventStore, deposits: int = 0) -> AsyncRepository[Account]:
    repo = AsyncRepository(store, Account)
    await repo.create("1", lambda a: a.open("ann"))
    for _ in range(deposits):
        await repo.update("1", lambda a: a.deposit(10))
    return repo


async def version_of(store: AsyncEventStore, stream_id: str = "account-1") -> int:
    return (await store.stream_info(stream_id)).version


# --- Expected versions (If-Match) --------------------------------------------------------


async def test_update_at_the_expected_version_runs(store: AsyncEventStore) -> None:
    repo = await opened(store, deposits=1)
    result = await repo.update("1", lambda a: a.deposit(5), expected_version=2)
    assert result.append is not None and result.append.last_version == 3
    assert (await repo.get("1")).balance == 15


async def test_update_at_another_version_is_refused_without_running(
    store: AsyncEventStore,
) -> None:
    repo = await opened(store, deposits=2)
    ran: list[int] = []
    with pytest.raises(WrongExpectedVersionError) as info:
        await repo.update("1", lambda a: ran.append(a.version), expected_version=2)
    assert (info.value.stream_id, info.value.expected, info.value.actual) == ("account-1", 2, 3)
    assert ran == []
    assert await version_of(store) == 3


async def test_update_with_an_expected_version_is_not_retried(store: AsyncEventStore) -> None:
    await opened(store)
    repo = AsyncRepository(interfering(store, MoneyDeposited(amount=1)), Account)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.version)
        account.deposit(5)

    with pytest.raises(WrongExpectedVersionError):
        await repo.update("1", command, expected_version=1)
    assert seen == [1]
    assert repo.retries == 0
    assert (await repo.get("1")).balance == 1  # only the other writer's deposit


async def test_expected_version_zero_means_a_new_aggregate(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await repo.update("1", lambda a: a.open("ann"), create=True, expected_version=0)
    with pytest.raises(WrongExpectedVersionError) as info:
        await repo.update("1", lambda a: a.open("bob"), create=True, expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert (await repo.get("1")).owner == "ann"


async def test_update_of_a_missing_aggregate_with_an_expected_version_is_not_found(
    store: AsyncEventStore,
) -> None:
    with pytest.raises(AggregateNotFoundError):
        await AsyncRepository(store, Account).update("9", lambda a: None, expected_version=3)


async def test_save_at_another_version_than_loaded_is_refused(store: AsyncEventStore) -> None:
    repo = await opened(store, deposits=1)
    account = await repo.get("1")
    account.deposit(1)
    with pytest.raises(WrongExpectedVersionError) as info:
        await repo.save(account, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    await repo.save(account, expected_version=2)
    assert await version_of(store) == 3


@pytest.mark.parametrize("bad", [-1, True])
async def test_an_invalid_expected_version_is_refused(store: AsyncEventStore, bad: int) -> None:
    repo = await opened(store)
    with pytest.raises(InvalidArgumentError):
        await repo.update("1", lambda a: a.deposit(1), expected_version=bad)
    assert await version_of(store) == 1


# --- Create-only ---------------------------------------------------------------------------


async def test_create_starts_a_new_stream(store: AsyncEventStore) -> None:
    result = await AsyncRepository(store, Account).create("1", lambda a: a.open("ann"))
    assert result.append is not None and result.append.first_version == 1
    assert (result.aggregate.owner, result.aggregate.version) == ("ann", 1)


async def test_create_of_an_existing_aggregate_is_refused_without_running(
    store: AsyncEventStore,
) -> None:
    repo = await opened(store, deposits=1)
    ran: list[str] = []
    with pytest.raises(WrongExpectedVersionError) as info:
        await repo.create("1", lambda a: ran.append(a.id))
    assert (info.value.expected, info.value.actual) == (NO_STREAM, 2)
    assert ran == []
    assert repo.retries == 0


# --- Idempotency keys ----------------------------------------------------------------------


async def test_a_repeated_key_returns_the_original_result_and_appends_nothing(
    store: AsyncEventStore,
) -> None:
    repo = await opened(store)
    runs: list[int] = []

    def command(account: Account) -> None:
        runs.append(account.version)
        account.deposit(7)
        account.deposit(3)

    first = await repo.update("1", command, idempotency_key="k-1")
    again = await repo.update("1", command, idempotency_key="k-1")
    assert runs == [1]
    assert first.append is not None and again.append is not None
    assert again.append.repeated and not first.append.repeated
    assert (again.append.first_version, again.append.last_version) == (2, 3)
    assert again.append.positions == first.append.positions
    assert again.append.event_ids == first.append.event_ids
    assert again.append.event_ids == idempotent_event_ids("k-1", "account-1", 2)
    assert again.events == first.events
    assert (again.aggregate.balance, again.aggregate.version) == (10, 3)
    assert await version_of(store) == 3


async def test_a_repeated_key_after_other_writes_returns_the_state_of_then(
    store: AsyncEventStore,
) -> None:
    repo = await opened(store)
    await repo.update("1", lambda a: a.deposit(50), idempotency_key="k-1")
    await repo.update("1", lambda a: a.withdraw(50))  # now the command would fail
    again = await repo.update("1", lambda a: a.deposit(50), idempotency_key="k-1")
    assert again.append is not None and again.append.repeated
    assert (again.aggregate.balance, again.aggregate.version) == (50, 2)
    assert await version_of(store) == 3


async def test_another_key_runs_the_command_again(store: AsyncEventStore) -> None:
    repo = await opened(store)
    await repo.update("1", lambda a: a.deposit(5), idempotency_key="k-1")
    result = await repo.update("1", lambda a: a.deposit(5), idempotency_key="k-2")
    assert result.append is not None and not result.append.repeated
    assert (await repo.get("1")).balance == 10


async def test_a_key_is_scoped_to_its_stream(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    await repo.create("1", lambda a: a.open("ann"), idempotency_key="k")
    result = await repo.create("2", lambda a: a.open("bob"), idempotency_key="k")
    assert result.append is not None and not result.append.repeated
    assert (await repo.get("2")).owner == "bob"


async def test_a_repeated_create_returns_the_original_result(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account)
    first = await repo.create("1", lambda a: a.open("ann"), idempotency_key="c")
    again = await repo.create("1", lambda a: a.open("ann"), idempotency_key="c")
    assert again.append is not None and again.append.repeated
    assert first.append is not None and again.append.positions == first.append.positions
    with pytest.raises(WrongExpectedVersionError):
        await repo.create("1", lambda a: a.open("ann"), idempotency_key="other")
    assert await version_of(store) == 1


async def test_a_keyed_command_that_fails_can_be_retried_with_its_key(
    store: AsyncEventStore,
) -> None:
    repo = await opened(store)
    with pytest.raises(InsufficientFunds):
        await repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")
    await repo.update("1", lambda a: a.deposit(5))
    result = await repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")
    assert result.append is not None and not result.append.repeated
    assert (await repo.get("1")).balance == 0


async def test_a_keyed_command_retried_on_a_conflict_appends_once(
    store: AsyncEventStore,
) -> None:
    await opened(store)
    repo = AsyncRepository(interfering(store, MoneyDeposited(amount=1)), Account)
    result = await repo.update("1", lambda a: a.deposit(5), idempotency_key="k")
    assert result.append is not None and result.append.last_version == 3
    assert repo.retries == 1
    assert (await repo.get("1")).balance == 6


async def test_a_repeat_older_than_the_snapshot_is_still_recognised(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account, snapshot_every=2)
    await repo.create("1", lambda a: a.open("ann"))
    first = await repo.update("1", lambda a: a.deposit(5), idempotency_key="d")  # v2
    spent = await repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")  # v3
    for _ in range(3):
        await repo.update("1", lambda a: a.deposit(1))  # v6, a snapshot at 6
    assert await store.load_snapshot("account-1") is not None
    # Its ids turn out to be stored: the deposit would succeed, the append is refused.
    again = await repo.update("1", lambda a: a.deposit(5), idempotency_key="d")
    # The withdrawal would now fail (a balance of 3).
    spent_again = await repo.update("1", lambda a: a.withdraw(5), idempotency_key="w")
    for original, repeat in [(first, again), (spent, spent_again)]:
        assert original.append is not None and repeat.append is not None
        assert repeat.append.repeated and repeat.append.positions == original.append.positions
        assert repeat.aggregate.version == original.aggregate.version
    assert (again.aggregate.balance, spent_again.aggregate.balance) == (5, 0)
    assert await version_of(store) == 6
    with pytest.raises(InsufficientFunds):  # a new key: no repeat to fall back on
        await repo.update("1", lambda a: a.withdraw(5), idempotency_key="w2")


async def test_save_with_event_ids_is_idempotent_at_the_same_version(
    store: AsyncEventStore,
) -> None:
    repo = await opened(store)
    ids = idempotent_event_ids("s", "account-1", 1)
    first, second = await repo.get("1"), await repo.get("1")
    first.deposit(4)
    second.deposit(4)
    original = await repo.save(first, event_ids=ids)
    repeat = await repo.save(second, event_ids=ids)
    assert repeat.append is not None and repeat.append.repeated
    assert original.append is not None and repeat.append.positions == original.append.positions
    assert await version_of(store) == 2


async def test_save_takes_event_ids_or_a_key_not_both(store: AsyncEventStore) -> None:
    repo = await opened(store)
    account = await repo.get("1")
    account.deposit(1)
    with pytest.raises(InvalidArgumentError):
        await repo.save(
            account, event_ids=idempotent_event_ids("a", "account-1", 1), idempotency_key="a"
        )
    with pytest.raises(InvalidArgumentError):
        await repo.save(account, idempotency_key="")
    assert await version_of(store) == 1


# --- Loading as of a version -----------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [None, 2])
async def test_get_as_of_a_version(store: AsyncEventStore, snapshot_every: int | None) -> None:
    await opened(store, deposits=4)  # balances 10, 20, 30, 40 at versions 2..5
    repo = AsyncRepository(store, Account, snapshot_every=snapshot_every)
    await repo.update("1", lambda a: a.deposit(10))  # version 6, a snapshot at 6 if any
    for version, balance in [(1, 0), (3, 20), (5, 40), (6, 50)]:
        account = await repo.get("1", version=version)
        assert (account.version, account.balance) == (version, balance)
        assert account.pending_events == ()
    assert (await repo.get("1")).balance == 50


async def test_get_beyond_the_last_version_is_not_found(store: AsyncEventStore) -> None:
    repo = await opened(store, deposits=1)
    assert await repo.get_or_none("1", version=3) is None
    with pytest.raises(AggregateNotFoundError):
        await repo.get("1", version=3)
    with pytest.raises(InvalidArgumentError):
        await repo.get("1", version=0)


async def test_decider_load_as_of_a_version(store: AsyncEventStore) -> None:
    repo = AsyncDeciderRepository(store, TallyDecider())
    for by in (1, 2, 4):
        await repo.handle("t", Count(by=by))
    state, info = await repo.load("t", version=2)
    assert (state, info.version, info.exists) == (3, 2, True)
    with pytest.raises(AggregateNotFoundError):
        await repo.load("t", version=4)


# --- Deciders: expected versions and keys ----------------------------------------------------


async def test_decider_handle_with_expected_version(store: AsyncEventStore) -> None:
    repo = AsyncDeciderRepository(store, TallyDecider())
    await repo.handle("t", Count(by=1), expected_version=0)
    with pytest.raises(WrongExpectedVersionError) as info:
        await repo.handle("t", Count(by=1), expected_version=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    await repo.handle("t", Count(by=2), expected_version=1)
    assert (await repo.load("t"))[0] == 3


async def test_decider_handle_with_a_repeated_key(store: AsyncEventStore) -> None:
    repo = AsyncDeciderRepository(store, TallyDecider())
    first = await repo.handle("t", Count(by=5), idempotency_key="k")
    await repo.handle("t", Count(by=-5))
    again = await repo.handle("t", Count(by=5), idempotency_key="k")
    assert again.append is not None and again.append.repeated
    assert first.append is not None and again.append.positions == first.append.positions
    assert (again.state, again.events) == (5, (Counted(by=5),))
    assert (await store.stream_info("tally-t")).version == 2


# --- Observable retries ----------------------------------------------------------------------


async def test_retries_are_logged_counted_and_reported(
    store: AsyncEventStore, caplog: pytest.LogCaptureFixture
) -> None:
    await opened(store)
    seen: list[Retry] = []
    repo = AsyncRepository(
        interfering(store, MoneyDeposited(amount=1), times=2), Account, on_retry=seen.append
    )
    with caplog.at_level(logging.DEBUG, logger="eventstore.repository"):
        await repo.update("1", lambda a: a.deposit(5))
    assert [(r.stream_id, r.attempt) for r in seen] == [("account-1", 1), ("account-1", 2)]
    assert all(isinstance(r.error, WrongExpectedVersionError) for r in seen)
    assert repo.retries == 2
    records = [r for r in caplog.records if r.name == "eventstore.repository"]
    assert [(r.levelno, getattr(r, "attempt", None)) for r in records] == [
        (logging.DEBUG, 1),
        (logging.DEBUG, 2),
    ]


async def test_decider_retries_are_counted_and_reported(store: AsyncEventStore) -> None:
    seen: list[Retry] = []
    repo = AsyncDeciderRepository(
        interfering(store, Counted(by=1)), TallyDecider(), on_retry=seen.append
    )
    await repo.handle("t", Count(by=2))
    assert [(r.stream_id, r.attempt) for r in seen] == [("tally-t", 1)]
    assert repo.retries == 1


# --- The serialising mode --------------------------------------------------------------------


async def test_serialized_commands_load_and_save_in_one_transaction(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account, serialize=True)
    await repo.create("1", lambda a: a.open("ann"))
    for _ in range(3):
        await repo.update("1", lambda a: a.deposit(2))
    tally = AsyncDeciderRepository(store, TallyDecider(), serialize=True)
    await tally.handle("t", Count(by=3))
    assert (await repo.get("1")).balance == 6
    assert (await tally.load("t"))[0] == 3
    assert repo.retries == tally.retries == 0


async def test_serialized_commands_still_retry_on_writers_that_take_no_lock(
    store: AsyncEventStore,
) -> None:
    await opened(store)
    repo = AsyncRepository(interfering(store, MoneyDeposited(amount=1)), Account, serialize=True)
    await repo.update("1", lambda a: a.deposit(5))
    assert repo.retries == 1
    # The other writer's deposit of 1 is kept on Postgres (its own connection) and undone
    # in memory (there it joined the serialised command's transaction, which rolled back).
    account = await AsyncRepository(store, Account).get("1")
    assert account.balance == 5 + (account.version - 2)


class LateWriterStore:
    """Wraps a store: another writer appends just before the lock is taken."""

    def __init__(self, store: AsyncEventStore, event: Event) -> None:
        self.store = store
        self.event = event

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def lock_stream(self, stream_id: str, **kwargs: Any) -> None:
        await self.store.append(stream_id, self.event)
        await self.store.lock_stream(stream_id, **kwargs)


async def test_serialized_commands_catch_up_after_the_lock_without_retrying(
    store: AsyncEventStore,
) -> None:
    await opened(store)
    late = cast(AsyncEventStore, LateWriterStore(store, MoneyDeposited(amount=100)))
    repo = AsyncRepository(late, Account, serialize=True)
    seen: list[int] = []

    def command(account: Account) -> None:
        seen.append(account.balance)
        account.deposit(5)

    result = await repo.update("1", command)
    assert (seen, repo.retries) == ([100], 0)
    assert (result.aggregate.balance, result.aggregate.version) == (105, 3)
    tally = AsyncDeciderRepository(
        cast(AsyncEventStore, LateWriterStore(store, Counted(by=10))),
        TallyDecider(),
        serialize=True,
    )
    decided = await tally.handle("t", Count(by=-5))  # only possible after the late 10
    assert (decided.state, tally.retries) == (5, 0)
    assert (await AsyncRepository(store, Account).get("1")).balance == 105


class ReadRecorder:
    """Wraps a store: records where its lean reads (loads and catch-ups) start."""

    def __init__(self, store: AsyncEventStore) -> None:
        self.store = store
        self.reads: list[int | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def read_stream_data(
        self, stream_id: str, *, from_version: int | None = None, conn: Any = None
    ) -> Any:
        self.reads.append(from_version)
        return self.store.read_stream_data(stream_id, from_version=from_version, conn=conn)


async def test_serialized_commands_catch_up_from_the_copy_they_kept(
    store: AsyncEventStore,
) -> None:
    await opened(store)
    recorder = ReadRecorder(store)
    repo = AsyncRepository(cast(AsyncEventStore, recorder), Account, serialize=True)
    first = await repo.update("1", lambda a: a.deposit(5))
    first.aggregate.deposit(1000)  # the caller's aggregate, not the copy kept
    await AsyncRepository(store, Account).update("1", lambda a: a.deposit(7))
    recorder.reads.clear()
    result = await repo.update("1", lambda a: a.deposit(1))
    # No load: one read, from the version the copy was kept at, under the lock.
    assert recorder.reads == [2]
    assert (result.aggregate.balance, result.aggregate.version) == (13, 4)
    assert (await AsyncRepository(store, Account).get("1")).balance == 13


async def test_serialized_commands_keep_copies_of_their_latest_aggregates_only(
    store: AsyncEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository_async, "WARM_AGGREGATES", 2)
    recorder = ReadRecorder(store)
    repo = AsyncRepository(cast(AsyncEventStore, recorder), Account, serialize=True)
    for name in ("a", "b", "c"):
        await repo.create(name, lambda a: a.open("ann"))
    recorder.reads.clear()
    await repo.update("a", lambda a: a.deposit(1))  # no copy left: load, then catch up
    assert recorder.reads == [1, 1]
    recorder.reads.clear()
    await repo.update("c", lambda a: a.deposit(1))
    assert recorder.reads == [1]


async def test_serialized_commands_keep_no_copy_of_an_aggregate_that_does_not_exist(
    store: AsyncEventStore,
) -> None:
    repo = AsyncRepository(store, Account, serialize=True)
    assert (await repo.update("9", lambda a: None, create=True)).append is None
    with pytest.raises(AggregateNotFoundError):
        await repo.update("9", lambda a: a.deposit(1))


async def test_serialized_commands_join_the_callers_transaction(store: AsyncEventStore) -> None:
    repo = AsyncRepository(store, Account, serialize=True)
    await repo.create("1", lambda a: a.open("ann"))

    class Abort(Exception):
        pass

    async def deposit_then_abort() -> None:
        async with store.transaction() as tx:
            await repo.update("1", lambda a: a.deposit(9), conn=tx)
            raise Abort

    with pytest.raises(Abort):
        await deposit_then_abort()
    assert (await repo.get("1")).balance == 0
    async with store.transaction() as tx:
        await repo.update("1", lambda a: a.deposit(9), conn=tx)
    assert (await repo.get("1")).balance == 9


async def test_lock_stream_checks_the_stream_id(store: AsyncEventStore) -> None:
    async with store.transaction() as tx:
        with pytest.raises(InvalidArgumentError):
            await store.lock_stream("", conn=tx)
