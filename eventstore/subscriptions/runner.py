"""Runs many subscriptions in one process (asyncio): shards by lease, wake-ups, graceful stop.

For each subscription the runner keeps a membership loop: it records itself as a live
runner, renews the leases it holds, takes its fair share of free shards (a share is the
shard count divided by the live runners, rounded up) and gives up shards above its share
so that a runner that joins gets work. Each held shard has a worker task that runs batch
cycles back to back while there is work, and otherwise waits for a wake-up. One watcher
per runner asks Postgres for its current snapshot every ``wake_interval`` (50 ms: one
query that touches no table) and wakes the workers when it changed, that is when some
transaction finished; with ``listen=True`` a LISTEN connection also wakes them on
notifications the application sends; and every ``poll_interval`` a worker looks anyway.
A statement-level NOTIFY trigger on the events table was measured and rejected: a
transaction that notifies takes a cluster-wide lock through its commit's WAL flush, which
serialised concurrent appends (see docs/discussions/subscriptions.md).

A coroutine handler runs on the async engine; a plain function runs on the sync engine in a
worker thread, with a sync connection.

Nothing here dies silently: a lost database connection is retried with backoff (no batch
was committed, so nothing is lost), any other error is logged and retried, and a shard
taken over by another runner (this one was paused past its lease) is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any, Final

from eventstore.errors import ConfigurationError, DatabaseUnavailableError, EventStoreError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.subscriptions import SubscriptionStore
from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore
from eventstore.registry import EventRegistry
from eventstore.subscriptions.engine import ShardWorker
from eventstore.subscriptions.engine_async import AsyncShardWorker
from eventstore.subscriptions.records import FencedError, StepResult
from eventstore.subscriptions.subscription import Subscription

__all__ = ["SubscriptionRunner", "notify_channel"]

logger = logging.getLogger("eventstore.subscriptions")

_BACKOFF_MAX: Final = 5.0


def notify_channel(schema: str) -> str:
    """Returns the channel runners LISTEN on (``listen=True``) for this schema.

    An application that wants its own appends picked up at once sends ``NOTIFY`` on it
    after its commit (never inside the appending transaction: see the module docstring).
    """
    return f"eventstore_events.{schema}"


def default_runner_id() -> str:
    """Returns an id naming this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class _Shard:
    """A held shard: its worker task, its wake-up, and whether to give the shard up."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.release = False
        self.task: asyncio.Task[None] | None = None
        # Set by wake-ups, cleared by the worker before each cycle: a wake-up that comes
        # while a cycle runs is kept, and the worker looks again at once.
        self.wake = asyncio.Event()
        # Whether the worker waits for a wake-up (caught up): the watch looks only then.
        self.idle = False


class SubscriptionRunner:
    """Runs subscriptions until stopped; any number of runners share their shards.

    Args:
        subscriptions: The subscriptions to run.
        registry: Decodes the events handed to the handlers.
        url: The database (``postgresql://`` or ``postgresql+psycopg://``); default
            ``EVENTSTORE_DATABASE_URL``, then ``DATABASE_URL``.
        schema: The event store's schema.
        runner_id: This runner's name in the runners table and in the leases; default
            host, pid and a random part.
        lease_ttl: Seconds a shard's lease lasts without renewal (renewed every third of
            it, at most every second). A runner that stops renewing (killed, paused,
            cut off) loses its shards to the others after this long.
        poll_interval: Seconds after which an idle worker looks for events even without
            a wake-up.
        wake_interval: Seconds between two looks at the database's snapshot, which wake
            the workers when a transaction has finished (one query touching no table).
        listen: Also wake the workers on ``NOTIFY`` on the channel ``eventstore_events.``
            followed by the schema name, from a LISTEN connection.
        connect_timeout: Seconds to wait for a connection, as for the store.
        engine: A SQLAlchemy ``Engine`` (``postgresql+psycopg://``), needed by plain
            handlers whose subscription asks for a SQLAlchemy connection or session.
        async_engine: An ``AsyncEngine``, needed by coroutine handlers that ask for one.

    The runner has two connection pools of its own (async, and sync when a handler is a
    plain function), each of up to the total shard count plus a few connections.
    """

    def __init__(
        self,
        subscriptions: Iterable[Subscription],
        *,
        registry: EventRegistry,
        url: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        runner_id: str | None = None,
        lease_ttl: float = 10.0,
        poll_interval: float = 1.0,
        wake_interval: float = 0.05,
        listen: bool = False,
        connect_timeout: float = 5.0,
        engine: Any = None,
        async_engine: Any = None,
    ) -> None:
        self.subscriptions = {s.name: s for s in subscriptions}
        if not self.subscriptions:
            raise EventStoreError("a runner needs at least one subscription")
        self.runner_id = runner_id or default_runner_id()
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.wake_interval = wake_interval
        self.listen = listen
        self.schema = schema
        shards = sum(s.shards for s in self.subscriptions.values())
        _check_engines(self.subscriptions.values(), engine, async_engine)
        # `engine` (a SQLAlchemy Engine) serves plain handlers with connection="sqlalchemy"
        # or "session", `async_engine` (an AsyncEngine) coroutine ones. A shard may hold
        # two pooled connections at once: its batch's and the one reading ahead.
        self.store = AsyncSubscriptionStore(
            url,
            registry=registry,
            schema=schema,
            max_size=2 * shards + 4,
            connect_timeout=connect_timeout,
            engine=async_engine,
        )
        self._sync_store: SubscriptionStore | None = None
        if any(not s.is_async for s in self.subscriptions.values()):
            self._sync_store = SubscriptionStore(
                url,
                registry=registry,
                schema=schema,
                max_size=2 * shards + 2,
                connect_timeout=connect_timeout,
                engine=engine,
            )
        self._held: dict[tuple[str, int], _Shard] = {}
        self._stopping = asyncio.Event()

    @property
    def held_shards(self) -> dict[str, list[int]]:
        """Returns the shards this runner holds now, per subscription."""
        held: dict[str, list[int]] = {}
        for name, shard in sorted(self._held):
            held.setdefault(name, []).append(shard)
        return held

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Runs until ``stop`` is set (or the task is cancelled), then stops gracefully.

        Graceful: each worker finishes and commits its current batch, leases are released
        and the runner leaves, so other runners take the shards at once.
        """
        stop = stop or asyncio.Event()
        await self.store.open()  # a database unreachable at start: a typed error, at once
        tasks: list[asyncio.Task[None]] = []
        try:
            if not await self._prepare(stop):
                return
            for sub in self.subscriptions.values():
                tasks.append(asyncio.create_task(self._membership(sub)))
            tasks.append(asyncio.create_task(self._watch()))
            if self.listen:
                tasks.append(asyncio.create_task(self._listen()))
            await stop.wait()
        finally:
            # Also when the start failed: pools left open would keep the process alive.
            await self._shutdown(tasks)

    async def _prepare(self, stop: asyncio.Event) -> bool:
        """Opens the sync store and creates the checkpoints, retrying with backoff while
        the database is unavailable (it went away after the pool opened: a restart);
        returns False when stopped meanwhile. Any other error raises."""
        failures = 0
        while True:
            try:
                if self._sync_store is not None:
                    await asyncio.to_thread(self._sync_store.open)
                for sub in self.subscriptions.values():
                    await self.store.ensure_checkpoints(sub.name, sub.shards, sub.start == "end")
                return True
            except DatabaseUnavailableError as exc:
                failures += 1
                logger.warning("database unavailable while starting, retrying: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(0.1 * 2**failures, _BACKOFF_MAX))
                if stop.is_set():
                    return False

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        self._stopping.set()
        self._wake_all()
        for task in tasks:
            task.cancel()
        workers = [s.task for s in self._held.values() if s.task is not None]
        await asyncio.gather(*tasks, *workers, return_exceptions=True)
        try:
            with contextlib.suppress(EventStoreError, OSError):
                for sub in self.subscriptions.values():
                    await self.store.leave(sub.name, self.runner_id)
        finally:
            try:
                await self.store.close()
            finally:
                if self._sync_store is not None:
                    await asyncio.to_thread(self._sync_store.close)

    # Membership: leases and the fair share.

    async def _membership(self, sub: Subscription) -> None:
        interval = min(self.lease_ttl / 3, 1.0)
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._rebalance(sub)
                failures = 0
            except DatabaseUnavailableError as exc:
                failures += 1
                logger.warning("database unavailable: %s", exc, extra={"subscription": sub.name})
            except Exception:
                failures += 1
                logger.exception("membership cycle failed", extra={"subscription": sub.name})
            delay = min(interval * (2**failures), _BACKOFF_MAX) if failures else interval
            await self._pause(None, delay)

    async def _rebalance(self, sub: Subscription) -> None:
        runners = await self.store.heartbeat(sub.name, self.runner_id, self.lease_ttl)
        working = [shard for (name, shard) in self._held if name == sub.name]
        held = await self.store.renew_leases(sub.name, self.runner_id, self.lease_ttl, working)
        self._drop_lost(sub.name, held)
        fair = math.ceil(sub.shards / max(runners, 1))
        mine = [shard for (name, shard) in self._held if name == sub.name]
        if len(mine) < fair:
            claimed = await self.store.claim_shards(
                sub.name, self.runner_id, self.lease_ttl, fair - len(mine), mine
            )
            for shard, epoch in claimed.items():
                self._start(sub, shard, epoch)
        elif len(mine) > fair:
            for shard in sorted(mine)[fair:]:
                self._held[(sub.name, shard)].release = True

    def _drop_lost(self, name: str, held: dict[int, int]) -> None:
        """Stops the workers of shards whose lease another runner took."""
        for (sub_name, shard), state in list(self._held.items()):
            if sub_name == name and held.get(shard) != state.epoch:
                logger.warning(
                    "shard taken over by another runner",
                    extra={"subscription": name, "shard": shard},
                )
                state.release = True

    def _start(self, sub: Subscription, shard: int, epoch: int) -> None:
        state = _Shard(epoch)
        self._held[(sub.name, shard)] = state
        state.task = asyncio.create_task(self._work(sub, shard, state))
        logger.info("shard taken", extra={"subscription": sub.name, "shard": shard, "epoch": epoch})

    # Workers.

    async def _work(self, sub: Subscription, shard: int, state: _Shard) -> None:
        step = self._stepper(sub, shard, state.epoch)
        failures = 0
        try:
            while not self._stopping.is_set() and not state.release:
                state.wake.clear()
                started = time.monotonic()
                try:
                    result = await step()
                except FencedError:
                    logger.warning(
                        "fenced: another runner holds the shard",
                        extra={"subscription": sub.name, "shard": shard},
                    )
                    return
                except DatabaseUnavailableError as exc:
                    failures += 1
                    logger.warning(
                        "database unavailable, retrying: %s",
                        exc,
                        extra={"subscription": sub.name, "shard": shard},
                    )
                    await self._pause(None, min(0.1 * 2**failures, _BACKOFF_MAX))
                    continue
                except Exception:
                    failures += 1
                    logger.exception(
                        "batch cycle failed", extra={"subscription": sub.name, "shard": shard}
                    )
                    await self._pause(None, min(0.1 * 2**failures, _BACKOFF_MAX))
                    continue
                if result.status == "postponed":  # the handler's world is unavailable
                    failures += 1
                    await self._pause(None, min(0.2 * 2**failures, _BACKOFF_MAX))
                    continue
                failures = 0
                if result.caught_up and result.read and result.status == "running":
                    # Events keep coming: look again one wake interval after this batch
                    # began, without the watch's query in between (a round trip saved
                    # per batch under load); the watch takes over once a batch is empty.
                    since = time.monotonic() - started
                    await self._pause(state.wake, max(0.0, self.wake_interval - since))
                elif result.caught_up or result.status != "running":
                    state.idle = True
                    try:
                        await self._pause(state.wake, self.poll_interval)
                    finally:
                        state.idle = False
            if state.release and not self._stopping.is_set():
                await self.store.release_shard(sub.name, shard, state.epoch)
        finally:
            # Only this worker's own entry: the shard may have been claimed anew meanwhile.
            if self._held.get((sub.name, shard)) is state:
                del self._held[(sub.name, shard)]
            if self._stopping.is_set():
                with contextlib.suppress(EventStoreError, OSError):
                    await self.store.release_shard(sub.name, shard, state.epoch)

    def _stepper(self, sub: Subscription, shard: int, epoch: int) -> Any:
        if sub.is_async:
            worker = AsyncShardWorker(self.store, sub, shard, epoch, lease_ttl=self.lease_ttl)
            return worker.step
        assert self._sync_store is not None
        sync_worker = ShardWorker(self._sync_store, sub, shard, epoch, lease_ttl=self.lease_ttl)

        async def step() -> StepResult:
            return await asyncio.to_thread(sync_worker.step)

        return step

    async def _pause(self, wake: asyncio.Event | None, seconds: float) -> None:
        """Waits for ``wake`` (if any), the stop, or ``seconds``, whichever comes first."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _wake_all(self) -> None:
        for state in self._held.values():
            state.wake.set()

    # Wake-ups.

    async def _watch(self) -> None:
        """Wakes the workers whenever Postgres's current snapshot changed (cheap polling)."""
        last: str | None = None
        failures = 0
        while not self._stopping.is_set():
            if not any(state.idle for state in self._held.values()):
                # Every worker is busy (catching up) or there are none: nobody to wake.
                last = None
                await self._pause(None, self.wake_interval)
                continue
            try:
                current = await self.store.snapshot_text()
                failures = 0
            except (DatabaseUnavailableError, OSError):
                failures += 1
                await self._pause(None, min(0.1 * 2**failures, _BACKOFF_MAX))
                continue
            if current != last:
                last = current
                self._wake_all()
            await self._pause(None, self.wake_interval)

    async def _listen(self) -> None:
        """Wakes the workers on every notification; reconnects with backoff, forever."""
        failures = 0
        while not self._stopping.is_set():
            try:
                async for _ in self.store.notifications(notify_channel(self.schema)):
                    self._wake_all()
                    failures = 0
            except (DatabaseUnavailableError, OSError) as exc:
                failures += 1
                logger.info("LISTEN connection lost, polling meanwhile: %s", exc)
                await self._pause(None, min(0.5 * 2**failures, _BACKOFF_MAX))


def _check_engines(subs: Iterable[Subscription], engine: Any, async_engine: Any) -> None:
    """Refuses, before anything runs, a SQLAlchemy subscription without its engine."""
    for sub in subs:
        if sub.connection == "psycopg":
            continue
        if (async_engine if sub.is_async else engine) is None:
            wanted = "async_engine= (an AsyncEngine)" if sub.is_async else "engine= (an Engine)"
            raise ConfigurationError(
                f"subscription {sub.name!r} has connection={sub.connection!r}: pass {wanted} "
                "on a 'postgresql+psycopg://' URL to the runner"
            )


# The collector's thresholds in the daemons (`tune_gc`): a young collection every 10,000
# container allocations instead of 700, a full one every 100 middle ones.
DAEMON_GC_THRESHOLDS: Final = (10_000, 50, 100)


def tune_gc() -> None:
    """Sets the cyclic garbage collector up for a daemon process (the CLI's ``run`` and
    ``rebuild`` commands call it before they start).

    A batch of 1,000 events allocates some 10,000 container objects (rows, events,
    payloads, writes) that live until the batch ends: with Python's default thresholds
    they set off a dozen young collections per batch, promote the whole batch, and every
    few batches a full collection over the heap. Measured on a rebuild, about a fifth of
    the daemon's time (``docs/discussions/projections.md``, "Garbage collection"). What
    was loaded at start (modules, classes) is moved out of the collector's way
    (`gc.freeze`), and collections run less often; a full one still runs every 100 middle
    ones, so a cycle of garbage is still reclaimed.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*DAEMON_GC_THRESHOLDS)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """Stops gracefully on the first SIGTERM/SIGINT; a second one exits at once. SIGUSR1
    prints the stack of every thread and asyncio task to stderr (what a stuck daemon
    waits for), and the daemon goes on."""
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        logger.info("stopping: finishing the current batches (signal again to force)")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGUSR1, dump_stacks)


def dump_stacks() -> None:
    """Prints the stack of every thread and of every asyncio task of the running loop."""
    print("--- threads", file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    print("--- asyncio tasks", file=sys.stderr)
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()
