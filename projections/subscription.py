"""A projection version's subscription: the engine's handler that calls the projection.

Each batch first reads the version's status row in the batch transaction (``FOR SHARE``):

- ``building``: the batch is a replay (the version is being rebuilt from the start of the
  log while another one serves reads), so handlers skip side effects;
- ``live``: events are handled for the first time (``replay`` only for retried dead
  letters, as the engine says);
- ``retired`` (or no row): nothing is applied; the batch rolls back and waits
  (`RetryLater`), so a version switched away from never writes again.

A switch updates these rows; the shared lock makes it wait for the batches in flight, and
the batches after it see the new status, so ``replay`` flips exactly at the switch.

The same statement reads the version's inline window (see `projections.inline_async`): the
events of transactions that applied them inline are skipped, the others are handled.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import tuple_row

from eventstore.events import Event, RecordedEvent
from eventstore.postgres.connections import unwrap_async_connection, unwrap_connection
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.subscriptions import Batch, RetryLater, Subscription, SubscriptionGroup
from projections import sql
from projections.projection import AnyProjection, AsyncProjection, Projection, ProjectionGroup
from projections.records import InlineWindow

__all__ = ["subscription_for", "subscription_group"]


def subscription_for(projection: AnyProjection, *, schema: str = DEFAULT_SCHEMA) -> Subscription:
    """Returns the subscription that builds and keeps ``projection``'s version."""
    statements = sql.render(schema)
    handler: _SyncHandler | _AsyncHandler
    if isinstance(projection, AsyncProjection):
        handler = _AsyncHandler(projection, statements)
    else:
        handler = _SyncHandler(projection, statements)
    return Subscription(
        projection.subscription_name(),
        handler,
        batch_size=projection.batch_size,
        event_types=projection.handled_types(),
        stream_prefix=projection.stream_prefix,
        shards=projection.shards,
        on_failure=projection.on_failure,
        retries=projection.retries,
        connection=projection.connection,
    )


def subscription_group(
    group: ProjectionGroup, *, schema: str = DEFAULT_SCHEMA
) -> SubscriptionGroup:
    """Returns the group's subscriptions as the engine's `SubscriptionGroup`.

    For the engine's own commands, e.g. ``eventstore subscriptions dead-letters retry
    projection:balances:v1 --target myapp.projections:subscriptions`` with
    ``subscriptions = functools.partial(subscription_group, group)`` in that module.
    """
    subscriptions = tuple(subscription_for(p, schema=schema) for p in group.projections)
    return SubscriptionGroup(group.registry, subscriptions)


def _replay(batch: Batch[Any], status: str | None, projection: AnyProjection) -> bool:
    """Returns the batch's ``replay`` flag for a version's status, or refuses to apply it."""
    if status == "building":
        return True
    if status == "live":
        return batch.replay
    raise RetryLater(
        f"projection {projection.name!r} version {projection.version} is "
        f"{status or 'not registered'}: nothing is applied"
    )


def _not_inline(
    events: tuple[RecordedEvent[Event], ...], since: str | None, until: str | None
) -> tuple[RecordedEvent[Event], ...]:
    """Returns the batch's events that no transaction applied inline."""
    window = InlineWindow.of(since, until)
    if window is None:
        return events
    return tuple(e for e in events if not window.applied_inline(e.transaction_id))


class _SyncHandler:
    """Calls a `Projection` with each batch, after reading its version's status.

    Until the table of inline windows is seen, the status is read in a savepoint, and
    without the windows when the table does not exist (a database not migrated to
    0008_projection_modes, whose role may not create it, runs every projection in daemon
    mode); once seen, in one plain statement.
    """

    def __init__(self, projection: Projection, statements: sql.ProjectionStatements) -> None:
        self.projection = projection
        self.statements = statements
        self.modes_seen = False
        self.params = {"name": projection.name, "version": projection.version}

    def _status(self, raw: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
        with raw.cursor(row_factory=tuple_row) as cur:
            if self.modes_seen:
                return cur.execute(self.statements.status_for_share, self.params).fetchone()
            try:
                with raw.transaction():
                    row = cur.execute(self.statements.status_for_share, self.params).fetchone()
            except psycopg.errors.UndefinedTable:
                row = cur.execute(self.statements.status_only, self.params).fetchone()
                return None if row is None else (*row, None, None)
            self.modes_seen = True
            return row

    def __call__(self, batch: Batch[Any], conn: Any) -> None:
        raw: psycopg.Connection[Any] = unwrap_connection(conn)
        row = self._status(raw)
        replay = _replay(batch, None if row is None else str(row[0]), self.projection)
        assert row is not None  # _replay refused a missing row
        events = _not_inline(batch.events, row[1], row[2])
        if not events:
            return
        if conn is raw and self.projection.pipeline:
            with raw.pipeline():
                self.projection.handle_batch(events, conn, replay=replay)
        else:
            self.projection.handle_batch(events, conn, replay=replay)


class _AsyncHandler:
    """Calls an `AsyncProjection` with each batch, after reading its version's status (as
    `_SyncHandler` does)."""

    def __init__(self, projection: AsyncProjection, statements: sql.ProjectionStatements) -> None:
        self.projection = projection
        self.statements = statements
        self.modes_seen = False
        self.params = {"name": projection.name, "version": projection.version}

    async def _status(self, raw: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
        async with raw.cursor(row_factory=tuple_row) as cur:
            if self.modes_seen:
                await cur.execute(self.statements.status_for_share, self.params)
                return await cur.fetchone()
            try:
                async with raw.transaction():
                    await cur.execute(self.statements.status_for_share, self.params)
                    row = await cur.fetchone()
            except psycopg.errors.UndefinedTable:
                await cur.execute(self.statements.status_only, self.params)
                found = await cur.fetchone()
                return None if found is None else (*found, None, None)
            self.modes_seen = True
            return row

    async def __call__(self, batch: Batch[Any], conn: Any) -> None:
        raw: psycopg.AsyncConnection[Any] = await unwrap_async_connection(conn)
        row = await self._status(raw)
        replay = _replay(batch, None if row is None else str(row[0]), self.projection)
        assert row is not None  # _replay refused a missing row
        events = _not_inline(batch.events, row[1], row[2])
        if not events:
            return
        if conn is raw and self.projection.pipeline:
            async with raw.pipeline():
                await self.projection.handle_batch(events, conn, replay=replay)
        else:
            await self.projection.handle_batch(events, conn, replay=replay)
