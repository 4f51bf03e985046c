"""Fixtures of the contract suite: each test runs once on every store implementation.

The suite is written once, async (`test_*_async.py`), and `tools/async_to_sync.py` generates
its sync twin (`test_*.py`). The generator keeps lowercase names as they are, so both halves
ask for the same fixtures (`store`, `new_store`); what they get follows from the test itself:
a coroutine test gets async stores, a plain test sync ones. The async half thus runs on
`AsyncInMemoryEventStore` and `AsyncPostgresEventStore`, the generated half on
`InMemoryEventStore` and `PostgresEventStore`, each test with the ids `[memory]` and
`[postgres]`. Only the Postgres half needs a server (and carries the `postgres` mark).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeAlias

import pytest

from eventstore import (
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncPostgresEventStore,
    EventRegistry,
    EventStore,
    InMemoryEventStore,
    PostgresEventStore,
)

AnyStore: TypeAlias = EventStore | AsyncEventStore
NewStore: TypeAlias = Callable[[EventRegistry], Any]

KINDS = [pytest.param("memory"), pytest.param("postgres", marks=pytest.mark.postgres)]


def make_store(
    kind: str, *, sync: bool, registry: EventRegistry, url: str | None = None
) -> AnyStore:
    """Builds a store of one kind ("memory" or "postgres") through its public constructor.

    A Postgres store opens its pool on first use; whoever builds one closes it.
    """
    if kind == "memory":
        return InMemoryEventStore(registry) if sync else AsyncInMemoryEventStore(registry)
    if kind != "postgres":
        raise ValueError(f"no store of kind {kind!r}")
    if url is None:
        raise ValueError("a Postgres store needs a database URL")
    if sync:
        return PostgresEventStore(url, registry=registry)
    return AsyncPostgresEventStore(url, registry=registry)


@pytest.fixture(params=KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Returns the kind of store this run of the test is for."""
    return str(request.param)


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest) -> str | None:
    """Returns a fresh migrated database for a Postgres run, None for an in-memory one."""
    if store_kind == "postgres":
        return str(request.getfixturevalue("eventstore_database_url"))
    return None


@pytest.fixture
def new_store(
    store_kind: str, store_url: str | None, request: pytest.FixtureRequest
) -> Iterator[NewStore]:
    """Returns a factory of stores of this run's kind and the test's shape, given a registry.

    Postgres stores from one test share its database; in-memory stores share nothing.
    """
    if inspect.iscoroutinefunction(request.function):
        yield request.getfixturevalue("new_async_store")
        return
    built: list[Any] = []

    def new(registry: EventRegistry) -> Any:
        built.append(make_store(store_kind, sync=True, registry=registry, url=store_url))
        return built[-1]

    yield new
    for store in built:
        store.close()


@pytest.fixture
async def new_async_store(store_kind: str, store_url: str | None) -> AsyncIterator[NewStore]:
    """Returns the factory `new_store` gives coroutine tests: async stores, closed with await."""
    built: list[Any] = []

    def new(registry: EventRegistry) -> Any:
        built.append(make_store(store_kind, sync=False, registry=registry, url=store_url))
        return built[-1]

    yield new
    for store in built:
        await store.close()


@pytest.fixture
def store(new_store: NewStore, eventstore_registry: EventRegistry) -> Any:
    """Returns a store of this run's kind and the test's shape, with the test registry."""
    return new_store(eventstore_registry)
