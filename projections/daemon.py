"""The projection daemon: runs projection versions on the subscription engine, switches them.

A daemon runs a `ProjectionGroup`: it prepares each version (creates its tables unless told
not to, registers it), then runs one subscription per version in a `SubscriptionRunner`
(sharded, leased, graceful stop, as the engine provides). The live version and a version
being built run side by side: the building one replays the log from the start into its own
tables while the live one keeps serving reads. When the building one has caught up, the
daemon switches (`AsyncProjectionManager.switch`) unless ``auto_switch`` is off, in which
case ``eventstore projections switch NAME`` does it on command.

A retired version in the group is skipped (its tables stay until dropped): the daemon of
the deployment before a switch may restart after it without writing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from eventstore.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    SubscriptionNotFoundError,
    WaitTimeoutError,
)
from eventstore.postgres.connections import sqlalchemy_url
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore
from eventstore.settings import Settings
from eventstore.subscriptions import SubscriptionRunner
from projections.errors import ProjectionStateError
from projections.manager_async import AsyncProjectionManager
from projections.projection import AnyProjection, AsyncProjection, ProjectionGroup
from projections.subscription import subscription_for

__all__ = ["ProjectionDaemon"]

logger = logging.getLogger("projections")

_BACKOFF_MAX: Final = 5.0


class ProjectionDaemon:
    """Runs a group of projections until stopped, switching rebuilt versions when caught up."""

    def __init__(
        self,
        group: ProjectionGroup,
        *,
        url: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        auto_switch: bool = True,
        switch_timeout: float = 30.0,
        create_tables: bool = True,
        runner_id: str | None = None,
        lease_ttl: float = 10.0,
        poll_interval: float = 1.0,
        wake_interval: float = 0.05,
        listen: bool = False,
        connect_timeout: float = 5.0,
    ) -> None:
        url = url or Settings.from_env().database_url
        if url is None:
            raise ConfigurationError(
                "no database configured: pass a URL or set EVENTSTORE_DATABASE_URL"
            )
        self.group = group
        self.url = url
        self.schema = schema
        self.auto_switch = auto_switch
        self.switch_timeout = switch_timeout
        self.create_tables = create_tables
        self.connect_timeout = connect_timeout
        self._runner_options: dict[str, Any] = {
            "runner_id": runner_id,
            "lease_ttl": lease_ttl,
            "poll_interval": poll_interval,
            "wake_interval": wake_interval,
            "listen": listen,
            "connect_timeout": connect_timeout,
        }
        self.running: tuple[AnyProjection, ...] = ()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Prepares the group's versions, then runs them until ``stop`` is set.

        Raises before running anything when a version cannot run: its tables are missing
        (`ProjectionTablesMissingError`, with ``create_tables=False``), its version is below
        the live one (`ProjectionVersionBackwardsError`), or every version is retired.
        """
        stop = stop or asyncio.Event()
        store = AsyncSubscriptionStore(
            self.url,
            registry=self.group.registry,
            schema=self.schema,
            # A switch holds one connection while it watches the checkpoints on another.
            max_size=2 + 2 * len(self.group.projections),
            connect_timeout=self.connect_timeout,
        )
        async with store, self._engines() as (engine, async_engine):
            manager = AsyncProjectionManager(store)
            building = await self._prepare(manager)
            runner = SubscriptionRunner(
                [subscription_for(p, schema=self.schema) for p in self.running],
                registry=self.group.registry,
                url=self.url,
                schema=self.schema,
                engine=engine,
                async_engine=async_engine,
                **self._runner_options,
            )
            running = asyncio.create_task(runner.run(stop))
            switchers = [
                asyncio.create_task(self._switch_when_caught_up(manager, p))
                for p in building
                if self.auto_switch
            ]
            try:
                await running
            finally:
                for task in switchers:
                    task.cancel()
                await asyncio.gather(*switchers, return_exceptions=True)
                if not running.done():
                    stop.set()
                    await running

    async def _prepare(self, manager: AsyncProjectionManager) -> list[AnyProjection]:
        """Prepares every version; keeps those that run; returns those being built."""
        running: list[AnyProjection] = []
        building: list[AnyProjection] = []
        skipped: ProjectionStateError | None = None
        # Lowest version first: on a new database, the first version goes live.
        for projection in sorted(self.group.projections, key=lambda p: (p.name, p.version)):
            try:
                version = await manager.prepare(projection, create_tables=self.create_tables)
            except ProjectionStateError as exc:  # retired: switched away from
                logger.warning(
                    "projection version retired, not run: %s",
                    exc,
                    extra={"projection": projection.name, "version": projection.version},
                )
                skipped = exc
                continue
            running.append(projection)
            if version.status == "building":
                building.append(projection)
        if not running:
            assert skipped is not None
            raise skipped
        self.running = tuple(running)
        return building

    @contextlib.asynccontextmanager
    async def _engines(self) -> AsyncIterator[tuple[sa.Engine | None, AsyncEngine | None]]:
        """Yields the SQLAlchemy engines the group's handlers need (none for psycopg ones)."""
        projections = self.group.projections
        wants = [p for p in projections if p.connection != "psycopg"]
        shards = sum(p.shards for p in projections) + 2
        engine = None
        async_engine = None
        if any(not isinstance(p, AsyncProjection) for p in wants):
            engine = sa.create_engine(sqlalchemy_url(self.url), pool_size=shards)
        if any(isinstance(p, AsyncProjection) for p in wants):
            async_engine = create_async_engine(sqlalchemy_url(self.url), pool_size=shards)
        try:
            yield engine, async_engine
        finally:
            if engine is not None:
                engine.dispose()
            if async_engine is not None:
                await async_engine.dispose()

    async def _switch_when_caught_up(
        self, manager: AsyncProjectionManager, projection: AnyProjection
    ) -> None:
        """Switches a building version live once it has caught up; retries until it has."""
        name, version = projection.name, projection.version
        extra = {"projection": name, "version": version}
        failures = 0
        while True:
            try:
                await manager.wait_until_caught_up(name, version=version, timeout=60)
                switched = await manager.switch(name, version, timeout=self.switch_timeout)
            except (WaitTimeoutError, SubscriptionNotFoundError):
                continue  # still rebuilding: a long replay, or the runner not started yet
            except ProjectionStateError as exc:  # switched or dropped by someone else
                logger.info("no switch: %s", exc, extra=extra)
                return
            except DatabaseUnavailableError as exc:
                failures += 1
                logger.warning("database unavailable: %s", exc, extra=extra)
                await asyncio.sleep(min(0.1 * 2**failures, _BACKOFF_MAX))
                continue
            except Exception:
                failures += 1
                logger.exception("switch failed", extra=extra)
                await asyncio.sleep(min(0.1 * 2**failures, _BACKOFF_MAX))
                continue
            logger.info("projection version switched live", extra={**extra, "at": switched})
            return
