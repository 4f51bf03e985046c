"""`execute_many`: one statement for many parameter sets in one pipeline, on real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventstore.postgres.pipelined_async import execute_many

pytestmark = pytest.mark.postgres

# Each execution doubles the value and adds its own number: any change of order, any
# execution missed or run twice, gives another result.
FOLD = "UPDATE folds SET value = value * 2 + %s WHERE id = 1"


def folded(numbers: list[int]) -> int:
    value = 0
    for n in numbers:
        value = value * 2 + n
    return value


@pytest.fixture
async def conn(eventstore_database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(eventstore_database_url) as conn:
        await conn.execute("CREATE TABLE folds (id int PRIMARY KEY, value numeric NOT NULL)")
        await conn.execute("INSERT INTO folds VALUES (1, 0)")
        await conn.execute(
            "CREATE TABLE rows (n int PRIMARY KEY, label text, amount bigint CHECK (amount >= 0))"
        )
        await conn.commit()
        yield conn


async def value(conn: psycopg.AsyncConnection[Any]) -> int:
    row = await (await conn.execute("SELECT value FROM folds WHERE id = 1")).fetchone()
    assert row is not None
    return int(row[0])


async def test_every_execution_runs_once_in_order(conn: psycopg.AsyncConnection[Any]) -> None:
    # Values psycopg sends as int2, int4 and int8 in turn: the statement is parsed again
    # whenever the parameter types change.
    numbers = [n % 7 - 3 for n in range(500)] + [40_000, 3, 5_000_000_000, 1, -70_000]
    await execute_many(conn, FOLD, [(n,) for n in numbers])
    assert await value(conn) == folded(numbers)
    await conn.rollback()
    assert await value(conn) == 0  # in the caller's transaction: the rollback undid it
    assert conn.pgconn.pipeline_status == psycopg.pq.PipelineStatus.OFF


async def test_mappings_nulls_and_composed_statements(conn: psycopg.AsyncConnection[Any]) -> None:
    statement = sql.SQL("INSERT INTO {} (n, label, amount) VALUES (%(n)s, %(label)s, %(amount)s)")
    params = [
        {"n": n, "label": None if n % 3 == 0 else f"row {n}", "amount": None if n % 5 else n}
        for n in range(1, 301)
    ]
    await execute_many(conn, statement.format(sql.Identifier("rows")), params)
    await conn.commit()
    rows = await (await conn.execute("SELECT n, label, amount FROM rows ORDER BY n")).fetchall()
    assert rows == [(p["n"], p["label"], p["amount"]) for p in params]


async def test_the_first_failure_raises_as_executemany_would_and_nothing_is_kept(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    params = [(n, f"row {n}", 100 - n) for n in range(200)]  # amount -1 at n = 101
    with pytest.raises(psycopg.errors.CheckViolation, match="rows_amount_check") as raised:
        await execute_many(conn, "INSERT INTO rows VALUES (%s, %s, %s)", params)
    await conn.rollback()
    async with conn.cursor() as cur:
        with pytest.raises(psycopg.errors.CheckViolation) as theirs:
            await cur.executemany("INSERT INTO rows VALUES (%s, %s, %s)", params)
    assert raised.value.diag.message_primary == theirs.value.diag.message_primary
    await conn.rollback()
    assert await (await conn.execute("SELECT count(*) FROM rows")).fetchone() == (0,)
    await execute_many(conn, FOLD, [(1,), (1,)])  # the connection is usable again
    assert await value(conn) == 3


async def test_a_value_psycopg_cannot_adapt_raises_before_anything_runs(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    await conn.execute(FOLD, (1,))  # a transaction is open, with a change in it
    params: list[tuple[object]] = [(n,) for n in range(100)]
    params[60] = (object(),)
    with pytest.raises(psycopg.ProgrammingError, match="cannot adapt"):
        await execute_many(conn, FOLD, params)
    assert await value(conn) == 1  # none of the 100 ran; the transaction goes on
    await execute_many(conn, FOLD, [(2,), (3,)])
    await conn.commit()
    assert await value(conn) == (1 * 2 + 2) * 2 + 3


async def test_inside_an_open_pipeline_what_was_queued_runs_first(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    async with conn.pipeline():
        await conn.execute("UPDATE folds SET value = 7 WHERE id = 1")
        await execute_many(conn, FOLD, [(1,), (2,)])
        await conn.execute(FOLD, (3,))
    assert await value(conn) == ((7 * 2 + 1) * 2 + 2) * 2 + 3


async def test_a_long_run_does_not_stall_on_full_socket_buffers(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    # Far more than the socket buffers hold, both ways: libpq's output buffer grows while
    # the results are read as they come.
    params = [(n, "x" * 200, n) for n in range(30_000)]
    await execute_many(conn, "INSERT INTO rows VALUES (%s, %s, %s)", params)
    assert await (await conn.execute("SELECT count(*), sum(amount) FROM rows")).fetchone() == (
        30_000,
        sum(range(30_000)),
    )


async def test_an_empty_run_does_nothing(conn: psycopg.AsyncConnection[Any]) -> None:
    await execute_many(conn, FOLD, [])
    assert await value(conn) == 0
