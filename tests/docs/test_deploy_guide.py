"""What docs/how-to/deploy.md claims beyond its runnable blocks.

A store whose every call passes ``conn=`` opens no pool of its own: built on a URL where
nothing listens, it still appends, reads and snapshots through the caller's connection,
while opening it fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstore import (
    NO_STREAM,
    AsyncPostgresEventStore,
    DatabaseUnavailableError,
    EventRegistry,
    PostgresEventStore,
    Snapshot,
)
from tests.support import Opened

NOWHERE = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"  # port 1: refused at once


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture
def engine(eventstore_database_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlalchemy_url(eventstore_database_url))
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(eventstore_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(eventstore_database_url))
    yield engine
    await engine.dispose()


def snapshot(stream_id: str, event_id: uuid.UUID) -> Snapshot:
    return Snapshot(
        stream_id, version=1, state_type="t", schema_version=1, state="{}", event_id=event_id
    )


def test_a_store_used_only_with_conn_opens_no_pool(
    engine: sa.Engine, eventstore_registry: EventRegistry
) -> None:
    store = PostgresEventStore(NOWHERE, registry=eventstore_registry, connect_timeout=1)
    with engine.begin() as connection:
        first = store.append(
            "acct-1", Opened(owner="ann"), expected_version=NO_STREAM, conn=connection
        )
        assert store.stream_info("acct-1", conn=connection).version == 1
        assert [e.version for e in store.read_stream("acct-1", conn=connection)] == [1]
        assert len(list(store.read_stream_raw("acct-1", conn=connection))) == 1
        assert len(list(store.read_stream_data("acct-1", conn=connection))) == 1
        store.save_snapshot(snapshot("acct-1", first.event_ids[0]), conn=connection)
        assert store.load_snapshot("acct-1", conn=connection) is not None
    with pytest.raises(DatabaseUnavailableError):
        store.open()
    store.close()


async def test_an_async_store_used_only_with_conn_opens_no_pool(
    async_engine: AsyncEngine, eventstore_registry: EventRegistry
) -> None:
    store = AsyncPostgresEventStore(NOWHERE, registry=eventstore_registry, connect_timeout=1)
    async with async_engine.begin() as connection:
        first = await store.append(
            "acct-2", Opened(owner="bo"), expected_version=NO_STREAM, conn=connection
        )
        assert (await store.stream_info("acct-2", conn=connection)).version == 1
        assert [e.version async for e in store.read_stream("acct-2", conn=connection)] == [1]
        await store.save_snapshot(snapshot("acct-2", first.event_ids[0]), conn=connection)
        assert await store.load_snapshot("acct-2", conn=connection) is not None
    with pytest.raises(DatabaseUnavailableError):
        await store.open()
    await store.close()
