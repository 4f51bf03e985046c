"""Aggregates and deciders, in memory, through the shipped given/when/then kit."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import pytest

from eventstore import (
    Aggregate,
    AggregateError,
    AggregateNotFoundError,
    CommandResult,
    DeciderRepository,
    DeciderResult,
    Event,
    EventRegistry,
    InMemoryEventStore,
    applies,
    message_context,
    uuid7,
)
from eventstore.demo.bank import (
    Account,
    AccountClosed,
    AccountIsClosed,
    AccountOpened,
    InsufficientFunds,
    MoneyDeposited,
    MoneyWithdrawn,
    registry,
)
from eventstore.testing import given, given_decider, in_memory_repository


def test_a_deposit_records_money_deposited() -> None:
    given(Account, AccountOpened(owner="ann")).when(lambda a: a.deposit(5, "r1")).then(
        MoneyDeposited(amount=5, reference="r1")
    )


def test_withdrawing_more_than_the_balance_is_refused() -> None:
    given(Account, AccountOpened(owner="ann"), MoneyDeposited(amount=5)).when(
        lambda a: a.withdraw(10)
    ).then_raises(InsufficientFunds, match="5 < 10")


def test_a_closed_account_refuses_commands() -> None:
    given(Account, AccountOpened(owner="ann"), AccountClosed()).when(
        lambda a: a.deposit(1)
    ).then_raises(AccountIsClosed)


def test_a_command_that_records_nothing() -> None:
    given(Account, AccountOpened(owner="ann")).when(lambda a: a.balance).then_nothing()


def test_then_reports_a_mismatch() -> None:
    outcome = given(Account, AccountOpened(owner="ann")).when(lambda a: a.deposit(5))
    with pytest.raises(AssertionError, match="expected events"):
        outcome.then(MoneyDeposited(amount=6))
    with pytest.raises(AssertionError, match="expected InsufficientFunds"):
        outcome.then_raises(InsufficientFunds)


def test_state_is_rebuilt_by_typed_handlers() -> None:
    account = Account.from_events(
        "1", [AccountOpened(owner="ann"), MoneyDeposited(amount=7), MoneyWithdrawn(amount=2)]
    )
    assert (account.owner, account.balance, account.version) == ("ann", 5, 3)
    assert account.stream_id == "account-1"


def test_an_event_without_a_handler_is_a_clear_error() -> None:
    class Stray(Event):
        event_type: ClassVar[str] = "test.Stray"

    account = Account.blank("1")
    with pytest.raises(AggregateError, match=r"no @applies handler for .*Stray"):
        account.record(Stray())


def test_handlers_accept_an_explicit_event_class() -> None:
    class Pinged(Event):
        event_type: ClassVar[str] = "test.Pinged"

    class Pinger(Aggregate):
        category: ClassVar[str] = "pinger"
        pings: int = 0

        @applies(Pinged)
        def _pinged(self, event: Pinged) -> None:
            self.pings += 1

    pinger = Pinger.from_events("p", [Pinged(), Pinged()])
    assert pinger.pings == 2


def test_an_aggregate_without_category_is_refused() -> None:
    class Nameless(Aggregate):
        pass

    with pytest.raises(AggregateError, match="category"):
        in_memory_repository(Nameless, registry)


def test_repository_saves_and_loads_in_memory() -> None:
    repo = in_memory_repository(Account, registry)
    account = Account.blank("1")
    account.open("ann")
    account.deposit(10)
    result = repo.save(account)
    assert result.append is not None and result.append.last_version == 2
    assert result.aggregate is account
    assert result.events == (AccountOpened(owner="ann"), MoneyDeposited(amount=10))
    assert account.pending_events == () and account.version == 2
    nothing = repo.save(account)  # nothing new: nothing written
    assert (nothing.events, nothing.append) == ((), None)
    loaded = repo.get("1")
    assert (loaded.balance, loaded.version) == (10, 2)
    with pytest.raises(AggregateNotFoundError):
        repo.get("missing")
    assert repo.get_or_none("missing") is None


def test_update_runs_a_command_and_a_raising_command_writes_nothing() -> None:
    repo = in_memory_repository(Account, registry)
    repo.update("1", lambda a: a.open("ann"), create=True)
    repo.update("1", lambda a: a.deposit(3))
    with pytest.raises(InsufficientFunds):
        repo.update("1", lambda a: (a.deposit(100), a.withdraw(1_000)))
    assert repo.store.stream_info("account-1").version == 2
    assert repo.get("1").balance == 3


def test_metadata_comes_from_the_context() -> None:
    store = InMemoryEventStore(registry)
    with message_context(correlation_id="corr-1", causation_id="msg-9", actor="ann"):
        store.append("s", AccountOpened(owner="ann"))
        with message_context(causation_id="msg-10"):
            store.append("s", MoneyDeposited(amount=1), metadata={"tenant": "t1"})
    store.append("s", MoneyDeposited(amount=1))
    first, second, third = store.read_stream("s")
    assert (first.metadata.correlation_id, first.metadata.causation_id) == ("corr-1", "msg-9")
    assert second.metadata.causation_id == "msg-10"
    assert (second.metadata.actor, second.metadata.tenant) == ("ann", "t1")
    assert third.metadata.correlation_id is None


def test_traceparent_comes_from_the_current_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    store = InMemoryEventStore(registry)
    with tracer.start_as_current_span("handle") as span:
        store.append("s", AccountOpened(owner="ann"))
        ctx = span.get_span_context()
    (event,) = store.read_stream("s")
    expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
    assert event.metadata.traceparent == expected


def test_without_opentelemetry_nothing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    import eventstore.context

    monkeypatch.setattr(eventstore.context, "_propagator", False)
    store = InMemoryEventStore(registry)
    store.append("s", AccountOpened(owner="ann"))
    (event,) = store.read_stream("s")
    assert event.metadata.traceparent is None


# The functional style: a decider over the same store.


class Incremented(Event):
    event_type: ClassVar[str] = "counter.Incremented"
    by: int


@dataclasses.dataclass(frozen=True)
class Increment:
    by: int
    limit: int = 10


class CounterDecider:
    category = "counter"

    def initial_state(self) -> int:
        return 0

    def decide(self, command: Increment, state: int) -> Sequence[Event]:
        if state + command.by > command.limit:
            raise ValueError("over the limit")
        return [Incremented(by=command.by)]

    def evolve(self, state: int, event: Event) -> int:
        return state + event.by if isinstance(event, Incremented) else state


def test_decider_given_when_then() -> None:
    given_decider(CounterDecider(), Incremented(by=4)).when(Increment(by=3)).then(Incremented(by=3))
    given_decider(CounterDecider(), Incremented(by=9)).when(Increment(by=3)).then_raises(
        ValueError, match="limit"
    )


def test_decider_repository_appends_decisions() -> None:
    repo = DeciderRepository(InMemoryEventStore(EventRegistry([Incremented])), CounterDecider())
    repo.handle("c1", Increment(by=2))
    repo.handle("c1", Increment(by=5))
    state, info = repo.load("c1")
    assert (state, info.version) == (7, 2)


def test_a_failed_snapshot_write_does_not_fail_a_committed_save(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from eventstore import DatabaseUnavailableError

    repo = in_memory_repository(Account, registry, snapshot_every=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise DatabaseUnavailableError("snapshot store down")

    monkeypatch.setattr(repo.store, "save_snapshot", broken)
    repo.update("1", lambda a: a.open("ann"), create=True)
    assert repo.get("1").version == 1
    assert "snapshot not saved" in caplog.text


def test_an_unresolvable_handler_annotation_suggests_the_explicit_form() -> None:
    with pytest.raises(TypeError, match=r"@applies\(EventClass\)"):

        class Broken(Aggregate):
            category: ClassVar[str] = "broken"

            @applies
            def _x(self, event: NotDefinedAnywhere) -> None:  # type: ignore[name-defined]  # noqa: F821
                pass


class Added(Event):
    event_type: ClassVar[str] = "test.Added"
    n: int


class Adder(Aggregate):
    category: ClassVar[str] = "adder"
    total: int = 0

    @applies(Added)
    def _added(self, event: Added) -> None:
        self.total += event.n


class Doubler(Adder):
    def _added(self, event: Added) -> None:  # a plain override
        self.total += 2 * event.n


def test_a_subclass_override_of_a_handler_is_used() -> None:
    assert Doubler.from_events("d", [Added(n=5)]).total == 10
    assert Adder.from_events("a", [Added(n=5)]).total == 5


def test_two_handlers_for_one_event_class_are_refused() -> None:
    with pytest.raises(TypeError, match="two @applies handlers"):

        class Twice(Aggregate):
            category: ClassVar[str] = "twice"

            @applies(Added)
            def _one(self, event: Added) -> None:
                pass

            @applies(Added)
            def _two(self, event: Added) -> None:
                pass


ADDER_REGISTRY = EventRegistry([Added])


def test_a_snapshot_of_another_class_with_the_same_category_is_ignored() -> None:
    from eventstore import Snapshot

    repo = in_memory_repository(Adder, ADDER_REGISTRY, snapshot_every=100)
    done = repo.update("1", lambda a: a.record(Added(n=1)), create=True)
    assert done.append is not None
    at_one = done.append.event_ids[-1]
    repo.store.save_snapshot(
        Snapshot("adder-1", 1, "SomethingElse", 1, '{"id":"1","total":99}', at_one)
    )
    assert repo.get("1").total == 1


def test_a_snapshot_newer_than_the_stream_is_ignored() -> None:
    from eventstore import Snapshot

    repo = in_memory_repository(Adder, ADDER_REGISTRY, snapshot_every=100)
    repo.update("1", lambda a: a.record(Added(n=1)), create=True)
    repo.store.save_snapshot(Snapshot("adder-1", 5, "Adder", 1, '{"id":"1","total":99}', uuid7()))
    loaded = repo.get("1")
    assert (loaded.total, loaded.version) == (1, 1)
    repo.store.save_snapshot(Snapshot("adder-2", 3, "Adder", 1, '{"id":"2","total":99}', uuid7()))
    assert repo.get_or_none("2") is None


def test_an_unserializable_snapshot_does_not_fail_a_committed_save(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = in_memory_repository(Adder, ADDER_REGISTRY, snapshot_every=1)

    import eventstore.aggregates.aggregate

    def broken(aggregate: Aggregate) -> None:
        raise ValueError("cannot serialize")

    monkeypatch.setattr(eventstore.aggregates.aggregate, "to_snapshot", broken)
    repo.update("1", lambda a: a.record(Added(n=1)), create=True)
    assert repo.get("1").version == 1


async def test_an_async_command_is_refused_not_dropped() -> None:
    from eventstore.testing import in_memory_async_repository

    repo = in_memory_async_repository(Adder, ADDER_REGISTRY)

    async def command(a: Adder) -> None:
        a.record(Added(n=1))

    with pytest.raises(TypeError, match="synchronous"):
        await repo.update("1", command, create=True)  # type: ignore[arg-type]
    assert await repo.get_or_none("1") is None


def test_model_copy_does_not_share_pending_events() -> None:
    original = Adder.blank("1")
    copy = original.model_copy()
    copy.record(Added(n=1))
    assert original.pending_events == ()


def test_a_scenario_runs_each_command_on_a_fresh_aggregate() -> None:
    scenario = given(Adder, Added(n=1))
    scenario.when(lambda a: a.record(Added(n=2))).then(Added(n=2))
    scenario.when(lambda a: a.record(Added(n=3))).then(Added(n=3))


def test_message_context_accepts_uuids() -> None:
    import uuid

    store = InMemoryEventStore(registry)
    correlation = uuid.uuid4()
    with message_context(correlation_id=correlation):
        store.append("s", AccountOpened(owner="ann"))
    (event,) = store.read_stream("s")
    assert event.metadata.correlation_id == str(correlation)


# What commands return: one vocabulary for both kinds of repository.


def test_update_returns_the_aggregate_the_events_and_the_append() -> None:
    repo = in_memory_repository(Account, registry)
    opened = repo.update("1", lambda a: a.open("ann"), create=True)
    result = repo.update("1", lambda a: (a.deposit(3), a.deposit(4)))
    assert isinstance(result, CommandResult)
    assert (result.aggregate.balance, result.aggregate.version) == (7, 3)
    assert result.aggregate.pending_events == ()
    assert result.events == (MoneyDeposited(amount=3), MoneyDeposited(amount=4))
    assert result.append is not None
    assert (result.append.stream_id, result.append.first_version) == ("account-1", 2)
    assert result.append.last_version == 3
    assert opened.append is not None and opened.append.positions == (1,)
    stored = [e.event_id for e in repo.store.read_stream("account-1", from_version=2)]
    assert list(result.append.event_ids) == stored


def test_a_command_that_records_nothing_returns_no_append() -> None:
    repo = in_memory_repository(Account, registry)
    repo.update("1", lambda a: a.open("ann"), create=True)
    result = repo.update("1", lambda a: a.balance)
    assert (result.events, result.append, result.aggregate.version) == ((), None, 1)


def test_a_retried_update_returns_the_result_of_the_attempt_that_saved() -> None:
    repo = in_memory_repository(Account, registry)
    repo.update("1", lambda a: a.open("ann"), create=True)
    runs = 0

    def deposit_while_another_writer_saves(account: Account) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            repo.store.append("account-1", MoneyDeposited(amount=100))
        account.deposit(1)

    result = repo.update("1", deposit_while_another_writer_saves)
    assert runs == 2 and result.aggregate.balance == 101
    assert result.append is not None and result.append.first_version == 3


def test_handle_returns_the_new_state_the_events_and_the_append() -> None:
    store = InMemoryEventStore(EventRegistry([Incremented]))
    repo = DeciderRepository(store, CounterDecider())
    repo.handle("c1", Increment(by=2))
    result = repo.handle("c1", Increment(by=5))
    assert isinstance(result, DeciderResult)
    assert (result.state, result.events) == (7, (Incremented(by=5),))
    assert result.append is not None
    assert (result.append.stream_id, result.append.last_version) == ("counter-c1", 2)
    assert repo.load("c1")[0] == result.state


def test_an_empty_decision_returns_the_state_and_no_append() -> None:
    repo = DeciderRepository(InMemoryEventStore(EventRegistry([Incremented])), CounterDecider())
    repo.handle("c1", Increment(by=3))
    result = repo.handle("c1", Increment(by=0, limit=0 + 3))
    assert result.state == 3
    nothing = DeciderRepository(repo.store, EmptyDecider()).handle("c1", Increment(by=1))
    assert (nothing.state, nothing.events, nothing.append) == (3, (), None)
    assert repo.store.stream_info("counter-c1").version == 2


class EmptyDecider(CounterDecider):
    def decide(self, command: Increment, state: int) -> Sequence[Event]:
        return []


def test_both_repositories_name_streams_alike() -> None:
    accounts = in_memory_repository(Account, registry)
    counters = DeciderRepository(InMemoryEventStore(registry), CounterDecider())
    assert accounts.stream_id_for("7") == Account.blank("7").stream_id == "account-7"
    assert counters.stream_id_for("7") == "counter-7"


async def test_the_async_repositories_return_the_same_results() -> None:
    from eventstore import AsyncDeciderRepository, AsyncInMemoryEventStore
    from eventstore.testing import in_memory_async_repository

    accounts = in_memory_async_repository(Account, registry)
    opened = await accounts.update("1", lambda a: a.open("ann"), create=True)
    assert opened.events == (AccountOpened(owner="ann"),) and opened.append is not None
    account = await accounts.get("1")
    account.deposit(5)
    saved = await accounts.save(account)
    assert (saved.aggregate, saved.append is not None) == (account, True)
    assert (await accounts.save(account)).append is None
    counters = AsyncDeciderRepository(
        AsyncInMemoryEventStore(EventRegistry([Incremented])), CounterDecider()
    )
    counted = await counters.handle("c1", Increment(by=4))
    assert (counted.state, counted.events) == (4, (Incremented(by=4),))
    assert counted.append is not None and counted.append.last_version == 1


def test_the_loader_hooks_are_not_in_an_aggregates_namespace() -> None:
    from pydantic import BaseModel

    public = {name for name in dir(Adder) if not name.startswith("_")} - set(dir(BaseModel))
    ours = {"record", "stream_id", "version", "pending_events", "from_events", "blank"}
    assert public == ours | {"category", "snapshot_version"}  # fields are not attributes
    for hook in ("apply_stored", "loaded_at", "mark_saved", "to_snapshot", "from_snapshot"):
        assert not hasattr(Adder, hook)


def test_snapshots_round_trip_through_the_loader_functions() -> None:
    from eventstore.aggregates.aggregate import from_snapshot, to_snapshot

    adder = Adder.from_events("1", [Added(n=2), Added(n=3)])
    snapshot = to_snapshot(adder, uuid7())
    assert (snapshot.stream_id, snapshot.version, snapshot.state_type) == ("adder-1", 2, "Adder")
    restored = from_snapshot(Adder, snapshot)
    assert restored is not None and (restored.total, restored.version) == (5, 2)
    assert from_snapshot(Doubler, snapshot) is None  # another class wrote it
