"""The testing kit for projections: given events, then the read model holds these rows.

A scenario runs one projection against a log of its own choosing:

- ``log="memory"`` (the default): events are recorded by an `InMemoryEventStore` and each
  `given` is applied at once by the projection's handlers, in one transaction on the engine
  (the read-model tables still live in Postgres: handlers write SQL);
- ``log="postgres"``: events are appended to the event store in the engine's database, and
  the projection's daemon runs until it has handled every one (`catch_up`), exactly as in
  production: filters, shards, checkpoints.

For example, with the pytest plugin's ``eventstore_engine`` fixture::

    def test_deposits_add_up(eventstore_engine: sa.Engine) -> None:
        scenario = projection_scenario(Balances(), eventstore_engine, registry=registry)
        scenario.given("account-1", Deposited(amount=10), Deposited(amount=5))
        scenario.then_rows("balances", [{"account": "account-1", "balance": 15}])

`catch_up` is the deterministic "caught up" for your own tests: it returns once the
projection has handled everything committed before the call, with no sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import orm

from eventstore.errors import ConfigurationError
from eventstore.events import Event, RecordedEvent
from eventstore.memory import InMemoryEventStore
from eventstore.postgres.connections import unwrap_connection
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.store import PostgresEventStore
from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore
from eventstore.registry import EventRegistry
from projections.daemon import ProjectionDaemon
from projections.manager_async import AsyncProjectionManager
from projections.projection import AnyProjection, AsyncProjection, Projection, ProjectionGroup

__all__ = ["ProjectionScenario", "catch_up", "catch_up_async", "projection_scenario"]

Log = Literal["memory", "postgres"]


async def catch_up_async(
    url: str,
    projection: AnyProjection,
    *,
    registry: EventRegistry,
    schema: str = DEFAULT_SCHEMA,
    timeout: float = 30.0,
) -> None:
    """Runs the projection's daemon until it has handled everything committed before the call.

    The version is prepared (tables created, registered) as the daemon does; the daemon is
    stopped gracefully before returning. Raises `WaitTimeoutError` after ``timeout``.
    """
    group = ProjectionGroup(registry, (projection,))
    daemon = ProjectionDaemon(group, url=url, schema=schema, poll_interval=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(daemon.run(stop))
    try:
        async with AsyncSubscriptionStore(url, registry=registry, schema=schema) as store:
            manager = AsyncProjectionManager(store)
            waiting = asyncio.create_task(
                manager.wait_until_caught_up(
                    projection.name, version=projection.version, timeout=timeout
                )
            )
            # A daemon that fails (a missing table, a version going backwards) ends the wait.
            await asyncio.wait({waiting, running}, return_when="FIRST_COMPLETED")
            if not waiting.done():
                waiting.cancel()
                running.result()
            waiting.result()
    finally:
        stop.set()
        await running


def catch_up(
    url: str,
    projection: AnyProjection,
    *,
    registry: EventRegistry,
    schema: str = DEFAULT_SCHEMA,
    timeout: float = 30.0,
) -> None:
    """`catch_up_async` from plain code (it runs its own event loop)."""
    asyncio.run(catch_up_async(url, projection, registry=registry, schema=schema, timeout=timeout))


class ProjectionScenario:
    """Feeds a projection events and checks the rows of its tables (see the module docstring)."""

    def __init__(
        self,
        projection: AnyProjection,
        engine: sa.Engine,
        *,
        registry: EventRegistry,
        log: Log = "memory",
        schema: str = DEFAULT_SCHEMA,
    ) -> None:
        if log not in ("memory", "postgres"):
            raise ConfigurationError(f"log must be 'memory' or 'postgres', not {log!r}")
        if log == "memory" and isinstance(projection, AsyncProjection):
            raise ConfigurationError(
                "an AsyncProjection runs in a scenario with log='postgres' (its daemon)"
            )
        self.projection = projection
        self.engine = engine
        self.registry = registry
        self.log = log
        self.schema = schema
        self.url = engine.url.render_as_string(hide_password=False)
        self._memory = InMemoryEventStore(registry)
        self._created = False

    def given(self, stream_id: str, *events: Event) -> ProjectionScenario:
        """Appends events to a stream; in memory, the projection applies them at once."""
        if self.log == "postgres":
            with PostgresEventStore(self.url, registry=self.registry, schema=self.schema) as store:
                store.append(stream_id, list(events))
            return self
        result = self._memory.append(stream_id, list(events))
        recorded = list(self._memory.read_stream(stream_id, from_version=result.first_version))
        self._apply(recorded)
        return self

    def _apply(self, events: Sequence[RecordedEvent[Event]]) -> None:
        projection = self.projection
        assert isinstance(projection, Projection)
        self._create_tables()
        wanted = {t.event_type for t in projection.handled_types()}
        handled = [e for e in events if e.event_type in wanted]
        with self.engine.begin() as conn:
            if projection.connection == "session":
                with orm.Session(bind=conn) as session:
                    projection.handle_batch(handled, session, replay=False)
                    session.flush()
            elif projection.connection == "psycopg":
                projection.handle_batch(handled, unwrap_connection(conn), replay=False)
            else:
                projection.handle_batch(handled, conn, replay=False)

    def _create_tables(self) -> None:
        if self._created:
            return
        tables = self.projection.versioned_tables()
        with self.engine.begin() as conn:
            for schema in sorted({str(t.schema) for t in tables}):
                conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            for table in tables:
                table.create(conn, checkfirst=True)
        self._created = True

    def caught_up(self, timeout: float = 30.0) -> ProjectionScenario:
        """With ``log="postgres"``, runs the daemon until it has handled every event given."""
        if self.log == "postgres":
            catch_up(
                self.url,
                self.projection,
                registry=self.registry,
                schema=self.schema,
                timeout=timeout,
            )
        else:
            self._create_tables()
        return self

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Returns the rows of one of the projection's tables (this version's), by key."""
        self.caught_up()
        versioned = self.projection.table(table)
        order = list(versioned.primary_key.columns) or list(versioned.columns)
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(versioned).order_by(*order)).mappings()
            return [dict(row) for row in found]

    def then_rows(
        self, table: str, expected: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]]
    ) -> None:
        """Asserts the table holds exactly these rows (dicts, or tuples in column order).

        Rows are compared in key order, whatever the order given.
        """
        rows = self.rows(table)
        if expected and not isinstance(expected[0], Mapping):
            got: list[Any] = sorted(tuple(r.values()) for r in rows)
            wanted: list[Any] = sorted(tuple(r) for r in expected)
        else:
            got = sorted(rows, key=repr)
            wanted = sorted((dict(r) for r in expected), key=repr)
        if got != wanted:
            raise AssertionError(
                f"{self.projection.name} v{self.projection.version} {table}: "
                f"expected rows {wanted}, got {got}"
            )


def projection_scenario(
    projection: AnyProjection,
    engine: sa.Engine,
    *,
    registry: EventRegistry,
    log: Log = "memory",
    schema: str = DEFAULT_SCHEMA,
) -> ProjectionScenario:
    """Returns a scenario for ``projection`` whose tables live in ``engine``'s database."""
    return ProjectionScenario(projection, engine, registry=registry, log=log, schema=schema)
