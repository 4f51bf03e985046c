"""Append edge cases: odd caller connections, lossy payloads, partial retries, schema names."""

from __future__ import annotations

import uuid
from typing import ClassVar

import psycopg
import pydantic
import pytest
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import (
    NO_STREAM,
    ConfigurationError,
    DuplicateEventIdError,
    Event,
    EventRegistry,
    InMemoryEventStore,
    InvalidEventError,
    PostgresEventStore,
)
from eventstore.postgres.connections import sqlalchemy_url
from tests.support import Deposited, Opened

DEP = Deposited(amount=1, currency="EUR")


class Measured(Event):
    event_type: ClassVar[str] = "test.Measured"
    value: float


class Login(Event):
    event_type: ClassVar[str] = "test.Login"
    token: pydantic.SecretStr


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    from tests.support import make_registry

    registry = make_registry()
    registry.register(Measured)
    registry.register(Login)
    return registry


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> PostgresEventStore | InMemoryEventStore:
    name = "in_memory_event_store" if request.param == "memory" else "postgres_event_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_a_sqlalchemy_connection_without_a_transaction_keeps_the_events(
    eventstore_database_url: str, postgres_event_store: PostgresEventStore
) -> None:
    engine = sa.create_engine(sqlalchemy_url(eventstore_database_url))
    with engine.connect() as conn:
        postgres_event_store.append("s-1", DEP, conn=conn)
        conn.commit()
    engine.dispose()
    assert postgres_event_store.stream_info("s-1").exists


async def test_an_async_sqlalchemy_connection_without_a_transaction_keeps_the_events(
    eventstore_database_url: str, postgres_event_store: PostgresEventStore
) -> None:
    from eventstore import AsyncPostgresEventStore

    engine = create_async_engine(sqlalchemy_url(eventstore_database_url))
    async with (
        AsyncPostgresEventStore(
            eventstore_database_url, registry=postgres_event_store.registry
        ) as store,
        engine.connect() as conn,
    ):
        await store.append("s-1", DEP, conn=conn)
        await conn.commit()
    await engine.dispose()
    assert postgres_event_store.stream_info("s-1").exists


@pytest.mark.parametrize(
    "event",
    [Measured(value=float("nan")), Login(token=pydantic.SecretStr("hunter2"))],
    ids=["nan", "secret"],
)
def test_payloads_that_would_not_read_back_are_refused(
    store: PostgresEventStore | InMemoryEventStore, event: Event
) -> None:
    with pytest.raises(InvalidEventError, match="read back"):
        store.append("s", event)
    assert not store.stream_info("s").exists


def test_nul_in_metadata_is_refused(store: PostgresEventStore | InMemoryEventStore) -> None:
    with pytest.raises(InvalidEventError, match="NUL"):
        store.append("s", DEP, metadata={"actor": "a\x00b"})
    assert not store.stream_info("s").exists


def test_a_connection_with_another_row_factory_works(
    eventstore_database_url: str, postgres_event_store: PostgresEventStore
) -> None:
    with psycopg.connect(eventstore_database_url, row_factory=dict_row) as conn:
        result = postgres_event_store.append("s", DEP, conn=conn)
        assert [e.version for e in postgres_event_store.read_stream("s", conn=conn)] == [1]
        conn.commit()
    assert result.last_version == 1


def test_an_id_from_another_stream_neither_aborts_the_transaction_nor_burns_positions(
    eventstore_database_url: str, postgres_event_store: PostgresEventStore
) -> None:
    taken = uuid.uuid4()
    first = postgres_event_store.append("other", DEP, event_ids=[taken])
    with psycopg.connect(eventstore_database_url) as conn:
        for expected in (NO_STREAM, 0):
            with pytest.raises(DuplicateEventIdError):
                postgres_event_store.append(
                    "new", DEP, expected_version=expected, event_ids=[taken], conn=conn
                )
        conn.execute("SELECT 1")  # the transaction is still usable
        nxt = postgres_event_store.append("new", DEP, conn=conn)
        conn.commit()
    assert nxt.positions[0] == first.positions[0] + 1


def test_retrying_part_of_an_append_is_not_a_repeat(
    store: PostgresEventStore | InMemoryEventStore,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    store.append("s", [DEP, DEP], expected_version=NO_STREAM, event_ids=[a, b])
    with pytest.raises(DuplicateEventIdError):
        store.append("s", DEP, expected_version=NO_STREAM, event_ids=[a])


def test_retrying_two_appends_as_one_is_not_a_repeat(
    store: PostgresEventStore | InMemoryEventStore,
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    store.append("s", DEP, expected_version=NO_STREAM, event_ids=[a])
    store.append("s", DEP, expected_version=1, event_ids=[b])
    with pytest.raises(DuplicateEventIdError):
        store.append("s", [DEP, DEP], expected_version=NO_STREAM, event_ids=[a, b])


@pytest.mark.parametrize("schema", ["a%sb", "", "x" * 64, "nul\x00"])
def test_unusable_schema_names_are_refused(schema: str, eventstore_registry: EventRegistry) -> None:
    with pytest.raises(ConfigurationError):
        PostgresEventStore("postgresql://x/y", registry=eventstore_registry, schema=schema)


def test_in_memory_reads_see_the_stream_when_iteration_starts(
    in_memory_event_store: InMemoryEventStore,
) -> None:
    in_memory_event_store.append("s", Opened(owner="a"))
    events = in_memory_event_store.read_stream("s")
    in_memory_event_store.append("s", DEP)
    assert [e.version for e in events] == [1, 2]
