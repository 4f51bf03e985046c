"""Public-API usage that must type-check under mypy --strict (run by `make lint`)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, ClassVar, assert_type

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from eventstore import (
    ANY,
    NO_STREAM,
    Aggregate,
    AppendResult,
    AsyncConnectionLike,
    AsyncDeciderRepository,
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncPostgresEventStore,
    AsyncRepository,
    CommandResult,
    ConnectionLike,
    DeciderRepository,
    DeciderResult,
    Direction,
    Event,
    EventMetadata,
    EventRegistry,
    EventStore,
    InMemoryEventStore,
    PostgresEventStore,
    RawRecordedEvent,
    RecordedEvent,
    Repository,
    Snapshot,
    StreamInfo,
    WrongExpectedVersionError,
    applies,
    message_context,
)
from eventstore.aggregates import Retry, idempotent_event_ids
from eventstore.testing import Outcome, given
from eventstore.web import etag_for, version_from_if_match
from projections import Projection, Sql, handles
from projections.testing import catch_up


class Shipped(Event):
    event_type: ClassVar[str] = "orders.Shipped"
    order_id: str


registry = EventRegistry([Shipped])
_NO_SNAPSHOT = Snapshot("order-1", 1, "Order", 1, "{}", uuid.uuid4())


def use_sync(store: EventStore) -> int:
    result: AppendResult = store.append(
        "order-1",
        [Shipped(order_id="1")],
        expected_version=NO_STREAM,
        metadata=EventMetadata(actor="ann"),
        event_ids=[uuid.uuid4()],
    )
    info: StreamInfo = store.stream_info("order-1")
    events: list[RecordedEvent[Event]] = list(store.read_stream("order-1", limit=10))
    try:
        store.append("order-1", Shipped(order_id="1"), expected_version=0)
    except WrongExpectedVersionError as exc:
        actual: int | None = exc.actual
        del actual
    return result.last_version + info.version + len(events)


async def use_async(store: AsyncEventStore) -> int:
    result = await store.append("order-1", Shipped(order_id="1"), expected_version=ANY)
    versions = [e.version async for e in store.read_stream("order-1")]
    return result.last_version + len(versions)


def stores() -> None:
    use_sync(InMemoryEventStore(registry))
    use_sync(PostgresEventStore("postgresql://localhost/app", registry=registry))
    _a: AsyncEventStore = AsyncInMemoryEventStore(registry)
    _b: AsyncEventStore = AsyncPostgresEventStore("postgresql://localhost/app", registry=registry)


# Every store satisfies its protocol, structurally: the whole of it, not just what is used.
_memory: EventStore = InMemoryEventStore(registry)
_postgres: EventStore = PostgresEventStore("postgresql://localhost/app", registry=registry)
_async_memory: AsyncEventStore = AsyncInMemoryEventStore(registry)
_async_postgres: AsyncEventStore = AsyncPostgresEventStore(
    "postgresql://localhost/app", registry=registry
)


# The README's twenty lines: `of_type=` narrows the events, so `.amount` type-checks.


class Deposited(Event):
    event_type: ClassVar[str] = "bank.Deposited"
    schema_version: ClassVar[int] = 1
    amount: int


def readme() -> None:
    bank = EventRegistry([Deposited])
    with PostgresEventStore("postgresql://localhost/app", registry=bank) as store:
        store.append("account-42", Deposited(amount=10), expected_version=NO_STREAM)
        info = store.stream_info("account-42")
        try:
            store.append("account-42", Deposited(amount=5), expected_version=info.version)
        except WrongExpectedVersionError as exc:
            print("someone else wrote first:", exc.expected, exc.actual)
        balance = sum(e.data.amount for e in store.read_stream("account-42", of_type=Deposited))
        assert_type(balance, int)


# ... and the read model of their events that follows them.

readme_balances = sa.Table(
    "balances",
    sa.MetaData(schema="read_models"),
    sa.Column("account", sa.Text, primary_key=True),
    sa.Column("balance", sa.BigInteger),
)


class ReadmeBalances(Projection):
    name = "balances"
    tables = (readme_balances,)

    def __init__(self) -> None:
        row = insert(table := self.table("balances"))
        added = {"balance": table.c.balance + row.excluded.balance}
        self.upsert = row.on_conflict_do_update(index_elements=["account"], set_=added)

    @handles
    def deposited(self, event: RecordedEvent[Deposited], conn: sa.Connection) -> Sql:
        return Sql(self.upsert, {"account": event.stream_id, "balance": event.data.amount})


def readme_read_model() -> None:
    registry = EventRegistry([Deposited])
    catch_up("postgresql://localhost/app", ReadmeBalances(), registry=registry)
    with psycopg.connect("postgresql://localhost/app") as conn:
        query = "SELECT balance FROM read_models.balances WHERE account = %s"
        projected = conn.execute(query, ["account-42"]).fetchone()
        assert_type(projected, tuple[Any, ...] | None)


def reads(store: EventStore, direction: Direction) -> None:
    assert_type(store.read_stream("s"), Iterator[RecordedEvent[Event]])
    assert_type(store.read_stream("s", of_type=Shipped), Iterator[RecordedEvent[Shipped]])
    assert_type(
        store.read_stream("s", direction="backward", limit=1, of_type=Shipped),
        Iterator[RecordedEvent[Shipped]],
    )
    assert_type(store.read_stream_raw("s", direction=direction), Iterator[RawRecordedEvent])
    store.read_stream("s", direction="sideways")  # type: ignore[call-overload]


async def async_reads(store: AsyncEventStore) -> list[str]:
    assert_type(store.read_stream("s", of_type=Shipped), AsyncIterator[RecordedEvent[Shipped]])
    return [e.data.order_id async for e in store.read_stream("s", of_type=Shipped)]


# `conn=` takes a connection or session (or None), and what `transaction()` yields.


def in_a_transaction(store: EventStore, session: Session) -> None:
    with store.transaction() as tx:
        assert_type(tx, ConnectionLike | None)
        store.append("order-1", Shipped(order_id="1"), conn=tx)
    store.append("order-1", Shipped(order_id="1"), conn=session)
    store.append("order-1", Shipped(order_id="1"), conn=object())  # type: ignore[arg-type]
    store.close()


async def in_an_async_transaction(store: AsyncEventStore, session: AsyncSession) -> None:
    async with store.transaction() as tx:
        assert_type(tx, AsyncConnectionLike | None)
        await store.append("order-1", Shipped(order_id="1"), conn=tx)
    await store.save_snapshot(await store.load_snapshot("order-1") or _NO_SNAPSHOT, conn=session)
    await store.delete_snapshot("order-1")
    async with store:
        pass


# Aggregates: handlers are checked against their event class.


class Order(Aggregate):
    category: ClassVar[str] = "order"
    shipped: bool = False

    @applies
    def _shipped(self, event: Shipped) -> None:
        self.shipped = event.order_id != ""

    def ship(self) -> None:
        self.record(Shipped(order_id=self.id))


def takes_append(result: AppendResult) -> int:
    return result.last_version


def use_repository(store: EventStore) -> bool:
    repo: Repository[Order] = Repository(store, Order, snapshot_every=100)
    result = repo.update("1", lambda o: o.ship(), create=True)
    assert_type(result, CommandResult[Order])
    assert_type(result.aggregate, Order)
    assert_type(result.events, tuple[Event, ...])
    assert_type(result.append, AppendResult | None)
    if result.append is not None:
        takes_append(result.append)
    maybe: Order | None = repo.get_or_none("2")
    outcome: Outcome = given(Order).when(lambda o: o.ship())
    outcome.then(Shipped(order_id="test"))
    return result.aggregate.shipped and maybe is None and repo.stream_id_for("1") == "order-1"


async def use_async_repository(store: AsyncEventStore) -> int:
    repo = AsyncRepository(store, Order)
    order = await repo.get("1")
    with message_context(correlation_id="c-1"):
        saved = await repo.save(order)
    assert_type(saved, CommandResult[Order])
    result = await repo.update("1", lambda o: o.ship())
    return order.version + (takes_append(result.append) if result.append else 0)


def the_loader_hooks_are_not_methods(order: Order) -> None:
    order.apply_stored(Shipped(order_id="1"))  # type: ignore[attr-defined]
    order.mark_saved(1)  # type: ignore[attr-defined]
    order.loaded_at(1)  # type: ignore[attr-defined]
    order.to_snapshot()  # type: ignore[attr-defined]


# Deciders: the same vocabulary, with the new state in place of the aggregate.


@dataclasses.dataclass(frozen=True)
class Ship:
    order_id: str


class OrderDecider:
    category = "order"

    def initial_state(self) -> bool:
        return False

    def decide(self, command: Ship, state: bool) -> Sequence[Event]:
        return [] if state else [Shipped(order_id=command.order_id)]

    def evolve(self, state: bool, event: Event) -> bool:
        return state or isinstance(event, Shipped)


def use_decider(store: EventStore) -> bool:
    orders = DeciderRepository(store, OrderDecider())
    result = orders.handle("1", Ship("1"))
    assert_type(result, DeciderResult[bool])
    assert_type(result.state, bool)
    if result.append is not None:
        takes_append(result.append)
    state, info = orders.load("1")
    return state and info.exists and result.events == (Shipped(order_id="1"),)


async def use_async_decider(store: AsyncEventStore) -> bool:
    orders = AsyncDeciderRepository(store, OrderDecider())
    result = await orders.handle("1", Ship("1"), metadata={"actor": "ann"})
    assert_type(result, DeciderResult[bool])
    return result.state


# Repositories behind HTTP: expected versions, idempotency keys, retries, serialising.


def use_http_repository(store: EventStore) -> int:
    retries: list[Retry] = []
    repo = Repository(store, Order, serialize=True, on_retry=retries.append)
    created = repo.create("1", lambda o: None, idempotency_key="k")
    assert_type(created, CommandResult[Order])
    repo.update("1", lambda o: o.ship(), expected_version=1, idempotency_key="k2")
    old: Order = repo.get("1", version=1)
    store.lock_stream("order-1")
    assert_type(retries[0].attempt, int)
    return old.version + repo.retries + len(idempotent_event_ids("k", "order-1", 2))


async def use_async_http_repository(store: AsyncEventStore) -> int | None:
    orders = AsyncDeciderRepository(store, OrderDecider(), serialize=True)
    result = await orders.handle("1", Ship("1"), expected_version=0, idempotency_key="k")
    state, _ = await orders.load("1", version=1)
    await store.lock_stream("order-1")
    return version_from_if_match(etag_for(orders.retries)) if state and result.state else None
