"""Appends inside the caller's transaction: psycopg, SQLAlchemy Core and ORM, sync and async."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from eventstore import (
    AsyncPostgresEventStore,
    ConfigurationError,
    PostgresEventStore,
    TransactionConflictError,
    WrongExpectedVersionError,
)
from eventstore.postgres.connections import sqlalchemy_url
from tests.support import Deposited

DEP = Deposited(amount=1, currency="EUR")
CREATE_ORDERS = "CREATE TABLE orders (id text PRIMARY KEY)"


@pytest.fixture
def engine(eventstore_database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlalchemy_url(eventstore_database_url))
    with engine.begin() as conn:
        conn.execute(sa.text(CREATE_ORDERS))
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(eventstore_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(eventstore_database_url))
    async with engine.begin() as conn:
        await conn.execute(sa.text(CREATE_ORDERS))
    yield engine
    await engine.dispose()


def orders(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id FROM orders")).scalars())


def test_sqlalchemy_connection_commit_keeps_rows_and_events(
    engine: sa.Engine, postgres_event_store: PostgresEventStore
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
        postgres_event_store.append("order-1", DEP, conn=conn)
    assert orders(engine) == ["o-1"]
    assert postgres_event_store.stream_info("order-1").version == 1


def test_sqlalchemy_connection_rollback_drops_rows_and_events(
    engine: sa.Engine, postgres_event_store: PostgresEventStore
) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
        postgres_event_store.append("order-1", DEP, conn=conn)
        assert postgres_event_store.stream_info("order-1", conn=conn).version == 1
        conn.rollback()
    assert orders(engine) == []
    assert not postgres_event_store.stream_info("order-1").exists


def test_orm_session_commit_and_rollback(
    engine: sa.Engine, postgres_event_store: PostgresEventStore
) -> None:
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
        postgres_event_store.append("order-1", DEP, conn=session)
        session.commit()
    with Session(engine) as session:
        session.execute(sa.text("INSERT INTO orders VALUES ('o-2')"))
        postgres_event_store.append("order-2", DEP, conn=session)
        session.rollback()
    assert orders(engine) == ["o-1"]
    assert postgres_event_store.stream_info("order-1").exists
    assert not postgres_event_store.stream_info("order-2").exists


def test_raw_psycopg_connection_commit_and_rollback(
    eventstore_database_url: str, postgres_event_store: PostgresEventStore
) -> None:
    with psycopg.connect(eventstore_database_url) as conn:
        postgres_event_store.append("s-1", DEP, conn=conn)
        conn.commit()
        postgres_event_store.append("s-2", DEP, conn=conn)
        conn.rollback()
    assert postgres_event_store.stream_info("s-1").exists
    assert not postgres_event_store.stream_info("s-2").exists


def test_a_conflict_inside_the_callers_transaction_leaves_it_usable(
    engine: sa.Engine, postgres_event_store: PostgresEventStore
) -> None:
    postgres_event_store.append("order-1", DEP)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
        with pytest.raises(WrongExpectedVersionError):
            postgres_event_store.append("order-1", DEP, expected_version=0, conn=conn)
        postgres_event_store.append("order-1", DEP, expected_version=1, conn=conn)
    assert orders(engine) == ["o-1"]
    assert postgres_event_store.stream_info("order-1").version == 2


def test_store_transaction_appends_several_streams_atomically(
    postgres_event_store: PostgresEventStore,
) -> None:
    with postgres_event_store.transaction() as tx:
        a = postgres_event_store.append("a", DEP, conn=tx)
        b = postgres_event_store.append("b", [DEP, DEP], conn=tx)
    assert a.transaction_id == b.transaction_id

    def two_appends_one_failing() -> None:
        with postgres_event_store.transaction() as tx:
            postgres_event_store.append("c", DEP, conn=tx)
            postgres_event_store.append("a", DEP, expected_version=5, conn=tx)

    with pytest.raises(WrongExpectedVersionError):
        two_appends_one_failing()
    assert not postgres_event_store.stream_info("c").exists
    assert postgres_event_store.stream_info("a").version == 1


def test_a_non_psycopg_driver_is_refused_clearly(
    postgres_event_store: PostgresEventStore,
) -> None:
    with pytest.raises(ConfigurationError, match="connection"):
        postgres_event_store.append("a", DEP, conn=object())  # type: ignore[arg-type]


async def async_orders(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.text("SELECT id FROM orders"))).scalars())


async def test_async_connection_commit_and_rollback(
    async_engine: AsyncEngine, async_postgres_event_store: AsyncPostgresEventStore
) -> None:
    store = async_postgres_event_store
    async with async_engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
        await store.append("order-1", DEP, conn=conn)
    async with async_engine.connect() as conn:
        await conn.execute(sa.text("INSERT INTO orders VALUES ('o-2')"))
        await store.append("order-2", DEP, conn=conn)
        assert (await store.stream_info("order-2", conn=conn)).exists
        await conn.rollback()
    assert await async_orders(async_engine) == ["o-1"]
    assert (await store.stream_info("order-1")).exists
    assert not (await store.stream_info("order-2")).exists


async def test_async_session_commit_and_rollback(
    async_engine: AsyncEngine, async_postgres_event_store: AsyncPostgresEventStore
) -> None:
    store = async_postgres_event_store
    async with AsyncSession(async_engine) as session:
        await session.execute(sa.text("INSERT INTO orders VALUES ('o-1')"))
        await store.append("order-1", DEP, conn=session)
        await session.commit()
    async with AsyncSession(async_engine) as session:
        await session.execute(sa.text("INSERT INTO orders VALUES ('o-2')"))
        await store.append("order-2", DEP, conn=session)
        await session.rollback()
    assert await async_orders(async_engine) == ["o-1"]
    assert (await store.stream_info("order-1")).exists
    assert not (await store.stream_info("order-2")).exists


async def test_async_raw_psycopg_connection_and_store_transaction(
    eventstore_database_url: str, async_postgres_event_store: AsyncPostgresEventStore
) -> None:
    store = async_postgres_event_store
    async with await psycopg.AsyncConnection.connect(eventstore_database_url) as conn:
        await store.append("s-1", DEP, conn=conn)
        await conn.rollback()
    assert not (await store.stream_info("s-1")).exists
    async with store.transaction() as tx:
        await store.append("s-2", DEP, conn=tx)
        await store.append("s-3", DEP, conn=tx)
    events = [e async for e in store.read_stream("s-3")]
    assert [e.data for e in events] == [DEP]


def test_serialization_failure_is_a_transaction_conflict(
    eventstore_database_url: str, postgres_event_store: PostgresEventStore
) -> None:
    postgres_event_store.append("s", DEP)
    with (
        psycopg.connect(eventstore_database_url) as first,
        psycopg.connect(eventstore_database_url) as second,
    ):
        for conn in (first, second):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            assert postgres_event_store.stream_info("s", conn=conn).version == 1
        postgres_event_store.append("s", DEP, expected_version=1, conn=first)
        first.commit()
        with pytest.raises(TransactionConflictError):
            postgres_event_store.append("s", DEP, expected_version=1, conn=second)
        second.rollback()
    assert postgres_event_store.stream_info("s").version == 2
