"""Helpers of the projection tests: an in-process daemon, appends, the database's view."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg

from eventstore import AppendResult, PostgresEventStore
from eventstore.subscriptions import AsyncSubscriptionStore
from projections import AsyncProjectionManager, ProjectionDaemon, ProjectionGroup
from projections.projection import AnyProjection
from tests.projections.app import make_registry
from tests.reliability.subscriber_app import Ticked

REGISTRY = make_registry()


@contextlib.asynccontextmanager
async def running(
    url: str, *projections: AnyProjection, **options: Any
) -> AsyncIterator[AsyncProjectionManager]:
    """Runs a daemon in this event loop; yields a manager to wait and look with.

    A daemon that fails fails the test: its error is raised when the block ends.
    """
    group = ProjectionGroup(REGISTRY, projections)
    options = {"lease_ttl": 3.0, "poll_interval": 0.1, **options}
    daemon = ProjectionDaemon(group, url=url, **options)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
            yield AsyncProjectionManager(store)
    finally:
        stop.set()
        await task


def append_ticks(
    url: str, streams: int, per_stream: int, *, prefix: str = "s", writer: str = "w", start: int = 0
) -> AppendResult:
    """Appends ``per_stream`` `Ticked` events to each of ``streams`` streams; returns the last."""
    with PostgresEventStore(url, registry=REGISTRY) as store:
        result = None
        for s in range(streams):
            events = [Ticked(writer=writer, txn=s, n=start + n) for n in range(per_stream)]
            result = store.append(f"{prefix}-{s}", events)
    assert result is not None
    return result


def query(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()  # type: ignore[arg-type, unused-ignore]


def versions(url: str) -> list[tuple[int, str]]:
    return [
        (r[0], r[1])
        for r in query(url, "SELECT version, status FROM eventstore.projections ORDER BY version")
    ]


async def eventually(condition: Any, timeout: float, what: str) -> Any:
    """Polls an async ``condition`` until it returns something truthy, or fails the test."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)  # the poll interval of a condition, not a wait for a daemon
