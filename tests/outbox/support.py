"""Events and helpers the outbox tests share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, TypeVar

from eventstore import Event, EventRegistry, PostgresEventStore
from eventstore.subscriptions import AsyncSubscriptionStore
from outbox import RelayGroup

T = TypeVar("T")


class Deposited(Event):
    event_type: ClassVar[str] = "bank.Deposited"
    amount: int
    note: str = ""


class Withdrawn(Event):
    event_type: ClassVar[str] = "bank.Withdrawn"
    amount: int


def make_registry() -> EventRegistry:
    return EventRegistry([Deposited, Withdrawn])


@contextlib.asynccontextmanager
async def running(
    url: str, group: RelayGroup, **options: Any
) -> AsyncIterator[AsyncSubscriptionStore]:
    """Runs a relay group in this event loop; yields a subscription store to wait with."""
    stop = asyncio.Event()
    options = {"lease_ttl": 3, "poll_interval": 0.1, **options}
    task = asyncio.create_task(group.run(stop, url=url, **options))
    try:
        async with AsyncSubscriptionStore(url, registry=group.registry) as store:
            yield store
    finally:
        stop.set()
        await task


def append(url: str, registry: EventRegistry, stream: str, *events: Event) -> Any:
    with PostgresEventStore(url, registry=registry) as store:
        return store.append(stream, list(events))


async def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Waits for ``condition()`` (sync or async) to be truthy, or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)  # the poll interval of a condition, with a deadline
