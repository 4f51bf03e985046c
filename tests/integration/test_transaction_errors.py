"""The caller's own errors inside `store.transaction()` come out as they are, not relabelled."""
# ruff: noqa: PT012 - the block under test is the whole transaction, raising from inside it

from __future__ import annotations

import psycopg
import pytest

from eventstore import AsyncPostgresEventStore, PostgresEventStore
from tests.support import Deposited

DEP = Deposited(amount=1, currency="EUR")


def test_a_typo_in_the_callers_own_sql_is_not_called_an_unmigrated_store(
    postgres_event_store: PostgresEventStore,
) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable), postgres_event_store.transaction() as tx:
        postgres_event_store.append("s", DEP, conn=tx)
        tx.execute("SELECT * FROM ordrs")
    assert not postgres_event_store.stream_info("s").exists


def test_the_callers_division_by_zero_is_not_called_invalid_event_data(
    postgres_event_store: PostgresEventStore,
) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), postgres_event_store.transaction() as tx:
        tx.execute("SELECT 1 / 0")


def test_the_callers_python_errors_pass_through_and_roll_back(
    postgres_event_store: PostgresEventStore,
) -> None:
    with pytest.raises(KeyError), postgres_event_store.transaction() as tx:
        postgres_event_store.append("s", DEP, conn=tx)
        raise KeyError("mine")
    assert not postgres_event_store.stream_info("s").exists


async def test_the_async_transaction_leaves_the_callers_errors_alone(
    async_postgres_event_store: AsyncPostgresEventStore,
) -> None:
    store = async_postgres_event_store
    with pytest.raises(psycopg.errors.UndefinedTable):
        async with store.transaction() as tx:
            await store.append("s", DEP, conn=tx)
            await tx.execute("SELECT * FROM ordrs")
    assert not (await store.stream_info("s")).exists
