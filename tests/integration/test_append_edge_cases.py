"""Append edge cases on Postgres: odd caller connections, ids taken elsewhere, schema names.

What every store promises (lossy payloads, partial retries...) is in `tests/contract`.
"""

from __future__ import annotations

import uuid

import psycopg
import psycopg_pool
import pytest
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import (
    NO_STREAM,
    ConfigurationError,
    DuplicateEventIdError,
    EventRegistry,
    PostgresEventStore,
)
from eventstore.postgres.connections import sqlalchemy_url
from tests.support import Deposited

DEP = Deposited(amount=1, currency="EUR")


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


@pytest.mark.parametrize("schema", ["a%sb", "", "x" * 64, "nul\x00"])
def test_unusable_schema_names_are_refused(schema: str, eventstore_registry: EventRegistry) -> None:
    with pytest.raises(ConfigurationError):
        PostgresEventStore("postgresql://x/y", registry=eventstore_registry, schema=schema)


def _our_prepared(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM pg_prepared_statements WHERE name LIKE 'eventstore\\_%'"
    ).fetchall()
    return [name for (name,) in rows]


@pytest.mark.parametrize("forget", ["DEALLOCATE ALL", "DISCARD ALL"])
def test_appends_prepare_their_statement_again_when_the_connection_forgot_it(
    eventstore_database_url: str, eventstore_registry: EventRegistry, forget: str
) -> None:
    pool = psycopg_pool.ConnectionPool(
        eventstore_database_url, min_size=1, max_size=1, kwargs={"autocommit": True}, open=True
    )
    with pool, PostgresEventStore(pool=pool, registry=eventstore_registry) as store:
        store.append("s-1", DEP, expected_version=NO_STREAM)
        with pool.connection() as conn:  # the store's only connection
            before = _our_prepared(conn)
            conn.execute(forget)
            assert _our_prepared(conn) == []
        second = store.append("s-2", DEP, expected_version=NO_STREAM)  # the same statement
        repeat = store.append("s-2", DEP, expected_version=NO_STREAM, event_ids=second.event_ids)
        with pool.connection() as conn:
            assert _our_prepared(conn) == before
            assert len(before) == 1
        assert store.stream_info("s-2").version == 1
    assert repeat.repeated and repeat.positions == second.positions


def test_a_pool_without_prepared_statements_appends_without_preparing(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    pool = psycopg_pool.ConnectionPool(
        eventstore_database_url,
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True, "prepare_threshold": None},
        open=True,
    )
    with pool, PostgresEventStore(pool=pool, registry=eventstore_registry) as store:
        for version in range(20):
            store.append("s-1", DEP, expected_version=version)
        taken = next(iter(store.read_stream("s-1"))).event_id
        with pytest.raises(DuplicateEventIdError):
            store.append("s-2", DEP, event_ids=[taken])
        with pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
        assert store.stream_info("s-1").version == 20
