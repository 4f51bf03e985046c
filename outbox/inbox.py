"""The inbox: makes a consumer idempotent by recording each message it processed.

Delivery from the relay is at least once, so a consumer sees some messages twice. It
records the message id in ``<schema>.inbox`` in the same database transaction as its
effects: the first delivery inserts the row and applies the effects, and they commit
together; a redelivery finds the row (the insert does nothing) and skips the effects:

    async with inbox.processing(conn, "billing", message.id) as fresh:
        if fresh:
            await apply(message, conn)
    await delivery.ack()  # only after the transaction committed

Two deliveries of one message processed at the same time are safe too: the second insert
waits for the first transaction on the primary key, then finds the row (or, if the first
rolled back, inserts it and applies the effects itself).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import psycopg
from psycopg import sql

from eventstore.postgres.connections import unwrap_async_connection, unwrap_connection
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.store import AsyncConnectionLike, ConnectionLike

__all__ = ["processing", "processing_sync"]

# ON CONFLICT DO NOTHING: a redelivered message's row is there already; the statement
# reports 0 rows instead of aborting the consumer's transaction with a unique violation.
RECORD_MESSAGE = sql.SQL(
    "INSERT INTO {schema}.inbox (consumer, message_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
)


def _record(schema: str) -> sql.Composed:
    return RECORD_MESSAGE.format(schema=sql.Identifier(schema))


@asynccontextmanager
async def processing(
    conn: AsyncConnectionLike,
    consumer: str,
    message_id: str | uuid.UUID,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> AsyncIterator[bool]:
    """Records a message as processed by ``consumer``; yields whether it is new.

    The row and whatever the block writes through ``conn`` commit together. On a psycopg
    connection with no transaction open, the block runs in a transaction of its own that
    commits when the block ends (so an acknowledgement after the block comes after the
    commit); inside an open transaction it runs in a savepoint. A SQLAlchemy connection
    or session is the caller's to commit. Apply the effects only when the value is True.
    """
    if not isinstance(conn, psycopg.AsyncConnection):
        cursor = await (await unwrap_async_connection(conn)).execute(
            _record(schema), (consumer, str(message_id))
        )
        yield cursor.rowcount == 1
        return
    async with conn.transaction():
        cursor = await conn.execute(_record(schema), (consumer, str(message_id)))
        yield cursor.rowcount == 1


@contextmanager
def processing_sync(
    conn: ConnectionLike,
    consumer: str,
    message_id: str | uuid.UUID,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> Iterator[bool]:
    """Records a message as processed, like `processing`, on a sync connection or session."""
    if not isinstance(conn, psycopg.Connection):
        cursor = unwrap_connection(conn).execute(_record(schema), (consumer, str(message_id)))
        yield cursor.rowcount == 1
        return
    with conn.transaction():
        cursor = conn.execute(_record(schema), (consumer, str(message_id)))
        yield cursor.rowcount == 1
