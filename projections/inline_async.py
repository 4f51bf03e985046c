"""Inline projections: a version applied inside the appending transaction itself.

`inline_async.py` is the source and `inline.py` its generated sync twin (see
`tools/async_to_sync.py`).

A web handler that appends through `AsyncInlineProjections` (or calls `apply_inline` after
its own append, on the same connection) writes the read model in the same transaction as
the events: the list endpoint reads its own write with no wait, and a rollback leaves
neither. The same projection class runs inline or in the daemon; which one applies a
version's events is recorded in the database (`AsyncProjectionManager.set_mode`), so an
application always calls `apply_inline`, and it applies only while the version is live and
inline:

- every application reads the version's status row and its mode row ``FOR SHARE``, in the
  appending transaction: a blue/green switch and a mode switch wait for the appends in
  flight, and the appends after them see what the switch wrote. The same statement first
  takes the projection's advisory lock in shared mode (a switch takes it exclusively), so
  appends that start while a switch waits queue behind it instead of holding it off;
- the mode switch records snapshots: the transactions visible in the "until" snapshot and
  not in the "since" one applied their own events, and the daemon skips exactly those.

While a version is inline, every append of the events it reads must go through
`apply_inline`: an append that does not is skipped by the daemon and so missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from eventstore.events import Event, RecordedEvent
from eventstore.postgres.connections import unwrap_async_connection
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.store_async import AsyncPostgresEventStore
from eventstore.store import AppendResult
from projections import sql
from projections.errors import ProjectionNotFoundError
from projections.projection import AsyncProjection
from projections.records import InlineWindow

__all__ = ["AsyncInlineProjections", "apply_inline"]


async def apply_inline(
    projection: AsyncProjection,
    events: Sequence[RecordedEvent[Event]],
    conn: Any,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> bool:
    """Applies just-appended events to ``projection`` in the caller's transaction.

    ``conn`` is the connection of the transaction that appended them (a psycopg
    connection, or a SQLAlchemy connection or session on psycopg), and what the handlers
    get: give the kind the projection's handlers take (`Projection.connection`). Nothing
    is applied unless the version is live and inline; returns whether it was. Raises
    `ProjectionNotFoundError` for a version that was never prepared, and whatever a handler
    raises: the append fails with it, roll the transaction back (as after any error).
    """
    raw: psycopg.AsyncConnection[Any] = await unwrap_async_connection(conn)
    params = sql.lock_params(projection.name) | {"version": projection.version}
    try:
        async with raw.cursor(row_factory=tuple_row) as cur:
            await cur.execute(sql.render(schema).inline_state, params)
            row = await cur.fetchone()
    except psycopg.errors.UndefinedTable as exc:  # no version prepared by this release
        raise ProjectionNotFoundError(projection.name, projection.version) from exc
    if row is None:
        raise ProjectionNotFoundError(projection.name, projection.version)
    status, since, until = row
    window = InlineWindow.of(since, until)
    if status != "live" or window is None or not window.is_open:
        return False
    wanted = {t.event_type for t in projection.handled_types()}
    handled = [e for e in events if e.event_type in wanted]
    if handled:
        await projection.handle_batch(handled, conn, replay=False)
    return True


class AsyncInlineProjections:
    """Appends events and applies the inline projections to them, in the caller's transaction.

    ``await inline.append(stream_id, events, conn=conn)`` is the store's `append` followed
    by `apply_inline` of each projection to the appended events, on ``conn``; the caller
    commits (or rolls back) both. A repeated append (the same event ids again) applies
    nothing: the first one did.

    Where the table of inline windows does not exist (a database not migrated to
    0008_projection_modes, see `AsyncProjectionManager.set_mode`), nothing is inline:
    appends apply nothing, and look for the table again until it is there.
    """

    def __init__(
        self,
        store: AsyncPostgresEventStore,
        projections: Sequence[AsyncProjection],
        *,
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        self.store = store
        self.projections = tuple(projections)
        self.schema = schema
        self._modes_seen = False

    async def append(
        self, stream_id: str, events: Sequence[Event] | Event, *, conn: Any, **options: Any
    ) -> AppendResult:
        """Appends through the store on ``conn`` (``options`` are `append`'s), then applies."""
        result = await self.store.append(stream_id, events, conn=conn, **options)
        await self.apply(result, conn=conn)
        return result

    async def apply(self, result: AppendResult, *, conn: Any) -> None:
        """Applies the projections to the events of an append made on ``conn``."""
        if result.repeated or not self.projections:
            return
        count = result.last_version - result.first_version + 1
        recorded = [
            event
            async for event in self.store.read_stream(
                result.stream_id, from_version=result.first_version, limit=count, conn=conn
            )
        ]
        if not self._modes_seen and not await self._modes_exist(conn):
            return
        for projection in self.projections:
            await apply_inline(projection, recorded, conn, schema=self.schema)

    async def _modes_exist(self, conn: Any) -> bool:
        raw: psycopg.AsyncConnection[Any] = await unwrap_async_connection(conn)
        statement = sql.render(self.schema).modes_exist
        async with raw.cursor(row_factory=tuple_row) as cur:
            await cur.execute(statement, {"table": sql.modes_table(self.schema)})
            row = await cur.fetchone()
        self._modes_seen = bool(row and row[0])
        return self._modes_seen
