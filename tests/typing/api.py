"""Public-API usage that must type-check under mypy --strict (run by `make lint`)."""

from __future__ import annotations

import uuid
from typing import ClassVar

from eventstore import (
    ANY,
    NO_STREAM,
    Aggregate,
    AppendResult,
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncPostgresEventStore,
    AsyncRepository,
    Event,
    EventMetadata,
    EventRegistry,
    EventStore,
    InMemoryEventStore,
    PostgresEventStore,
    RecordedEvent,
    Repository,
    StreamInfo,
    WrongExpectedVersionError,
    applies,
    message_context,
)
from eventstore.testing import given


class Shipped(Event):
    event_type: ClassVar[str] = "orders.Shipped"
    order_id: str


registry = EventRegistry([Shipped])


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


# Aggregates: handlers are checked against their event class.


class Order(Aggregate):
    category: ClassVar[str] = "order"
    shipped: bool = False

    @applies
    def _shipped(self, event: Shipped) -> None:
        self.shipped = event.order_id != ""

    def ship(self) -> None:
        self.record(Shipped(order_id=self.id))


def use_repository(store: EventStore) -> bool:
    repo: Repository[Order] = Repository(store, Order, snapshot_every=100)
    order: Order = repo.update("1", lambda o: o.ship(), create=True)
    maybe: Order | None = repo.get_or_none("2")
    given(Order).when(lambda o: o.ship()).then(Shipped(order_id="test"))
    return order.shipped and maybe is None


async def use_async_repository(store: AsyncEventStore) -> int:
    repo = AsyncRepository(store, Order)
    order = await repo.get("1")
    with message_context(correlation_id="c-1"):
        await repo.save(order)
    return order.version
