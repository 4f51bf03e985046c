"""The ``eventstore projections`` commands: run, rebuild, status, list, switch, mode, drop.

Registered through the ``eventstore.cli`` entry-point group (``register``), so the
``eventstore`` command never imports this package itself.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from eventstore.cli._exit import EXIT_OK
from eventstore.cli.database import resolve_url
from eventstore.errors import ConfigurationError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.subscriptions import SubscriptionStore
from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore
from eventstore.registry import EventRegistry
from eventstore.subscriptions.runner import install_signal_handlers, tune_gc
from projections.daemon import ProjectionDaemon
from projections.errors import ProjectionError, ProjectionNotFoundError, ProjectionStateError
from projections.manager import ProjectionManager
from projections.manager_async import AsyncProjectionManager
from projections.projection import ProjectionGroup
from projections.records import ProjectionStatus, ProjectionVersion

__all__ = ["load_group", "register"]


def load_group(target: str) -> ProjectionGroup:
    """Imports ``module:name``: a `ProjectionGroup`, or a function returning one."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected module:name, got {target!r}")
    try:
        found: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {target!r}: {exc}") from exc
    if callable(found) and not isinstance(found, ProjectionGroup):
        found = found()
    if not isinstance(found, ProjectionGroup):
        raise ConfigurationError(f"{target!r} is not a ProjectionGroup")
    return found


def _manager(args: argparse.Namespace) -> tuple[SubscriptionStore, ProjectionManager]:
    store = SubscriptionStore(
        resolve_url(args.url), registry=EventRegistry(), schema=args.schema, max_size=2
    )
    return store, ProjectionManager(store)


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    everything = [header, *rows]
    widths = [max(len(r[i]) for r in everything) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in everything
    )


# run


def cmd_run(args: argparse.Namespace) -> int:
    group = load_group(args.target)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    daemon = ProjectionDaemon(
        group,
        url=resolve_url(args.url),
        schema=args.schema,
        auto_switch=not args.no_auto_switch,
        switch_timeout=args.switch_timeout,
        create_tables=not args.no_create_tables,
        runner_id=args.runner_id,
        lease_ttl=args.lease_ttl,
        poll_interval=args.poll_interval,
        wake_interval=args.wake_interval,
        listen=args.listen,
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        tune_gc()
        await daemon.run(stop)

    asyncio.run(main())
    return EXIT_OK


# rebuild


@dataclasses.dataclass
class _Progress:
    """Counts a rebuild's progress: events handled, and the log's events still ahead.

    What is ahead counts every event type (the subscription's lag), so with a projection
    that reads a few types of many the estimate is high until the end.
    """

    started: float = dataclasses.field(default_factory=time.monotonic)
    done: int = 0
    lag: int | None = None

    def update(self, done: int, lag: int) -> None:
        self.done, self.lag = done, lag

    @property
    def total(self) -> int:
        return self.done + (self.lag or 0)

    @property
    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.started, 1e-6)


def cmd_rebuild(args: argparse.Namespace) -> int:
    group = load_group(args.target)
    projection = group.get(args.name, args.version)
    url = resolve_url(args.url)
    return asyncio.run(_rebuild(args, ProjectionGroup(group.registry, (projection,)), url))


async def _rebuild(args: argparse.Namespace, group: ProjectionGroup, url: str) -> int:
    (projection,) = group.projections
    store = AsyncSubscriptionStore(url, registry=group.registry, schema=args.schema, max_size=2)
    async with store:
        manager = AsyncProjectionManager(store)
        live = await manager.live_version(projection)
        if live is None or live == projection.version:
            raise ProjectionStateError(
                projection.name,
                projection.version,
                "live" if live else "not registered",
                "a rebuild builds a new version beside the live one: "
                + ("bump the version" if live else "run the daemon, the first version goes live"),
            )
        prepared = await manager.prepare(projection, start=_start(args.start))
        stop = asyncio.Event()
        install_signal_handlers(stop)
        tune_gc()
        daemon = ProjectionDaemon(group, url=url, schema=args.schema, auto_switch=False)
        running = asyncio.create_task(daemon.run(stop))
        try:
            progress = await _follow(manager, prepared, running, args.timeout)
            switched = None if args.no_switch else await manager.switch(projection.name)
        finally:
            stop.set()
            await running
    _summary(prepared, progress, switched)
    return EXIT_OK


def _start(given: str | None) -> str | int | None:
    """Returns ``--from``: a global position (digits) or a read_all token."""
    if given is None:
        return None
    return int(given) if given.isdigit() else given


async def _follow(
    manager: AsyncProjectionManager,
    version: ProjectionVersion,
    running: asyncio.Task[None],
    timeout: float,
) -> _Progress:
    """Shows the progress of a rebuild until it has caught up with the log."""
    progress = _Progress()
    caught_up = asyncio.create_task(
        manager.wait_until_caught_up(version.name, version=version.version, timeout=timeout)
    )
    with _Display(f"{version.name} v{version.version}") as show:
        while not caught_up.done():
            if running.done():  # the daemon failed or was stopped (a signal)
                caught_up.cancel()
                running.result()
                raise ProjectionError(
                    f"the rebuild of {version.name} v{version.version} stopped before it "
                    "caught up; run it again to carry on where it stopped"
                )
            shards = await manager.subscriptions.status(version.subscription)
            if shards:
                progress.update(sum(s.handled for s in shards), sum(s.lag_events for s in shards))
                show(progress)
            await asyncio.wait({caught_up, running}, timeout=0.5, return_when="FIRST_COMPLETED")
        caught_up.result()
        shards = await manager.subscriptions.status(version.subscription)
        progress.update(sum(s.handled for s in shards), 0)
        show(progress)
    return progress


class _Display:
    """Shows progress with rich when it is installed (the ``cli`` extra), else plain lines."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> Any:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            return self._plain
        self._progress = Progress(
            TextColumn("rebuilding {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("events, {task.fields[rate]:,.0f} events/s, ETA"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=None, rate=0.0)
        return self._rich

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _rich(self, progress: _Progress) -> None:
        self._progress.update(
            self._task, completed=progress.done, total=progress.total, rate=progress.rate
        )

    def _plain(self, progress: _Progress) -> None:
        now = time.monotonic()
        if now - self._last < 2 and progress.lag:
            return
        self._last = now
        eta = (progress.lag or 0) / progress.rate if progress.rate else float("inf")
        print(
            f"rebuilding {self.label}: {progress.done}/{progress.total} events, "
            f"{progress.rate:,.0f} events/s, ETA {eta:.0f} s",
            file=sys.stderr,
        )


def _summary(
    prepared: ProjectionVersion, progress: _Progress, switched: ProjectionVersion | None
) -> None:
    elapsed = time.monotonic() - progress.started
    print(
        f"rebuilt {prepared.name} v{prepared.version}: {progress.done} events in "
        f"{elapsed:.1f} s ({progress.rate:,.0f} events/s)"
    )
    if switched is None:
        print(f"not switched: run `eventstore projections switch {prepared.name}` when ready")
        return
    print(f"switched: {prepared.name} v{switched.version} is live")


# status, list, switch, drop


def cmd_status(args: argparse.Namespace) -> int:
    store, manager = _manager(args)
    with store:
        found = manager.status(args.name)
    if args.name and not found:
        raise ProjectionNotFoundError(args.name)
    print(_table(_STATUS_HEADER, [_status_row(s) for s in found]))
    return EXIT_OK


_STATUS_HEADER = ("projection", "version", "status", "shards", "handled", "lag", "lag s", "dead")


def _status_row(s: ProjectionStatus) -> tuple[str, ...]:
    return (
        s.version.name,
        str(s.version.version),
        s.version.status,
        f"{len(s.shards)} {s.running}",
        str(s.handled),
        str(s.lag_events),
        f"{s.lag_seconds:.1f}",
        str(s.dead_letters),
    )


def cmd_list(args: argparse.Namespace) -> int:
    store, manager = _manager(args)
    with store:
        found = manager.status(args.name)
    header = ("projection", "version", "status", "switched", "tables")
    rows = [
        (
            s.version.name,
            str(s.version.version),
            s.version.status,
            "-" if s.version.switched_at is None else f"{s.version.switched_at:%Y-%m-%d %H:%M:%S}",
            ", ".join(s.tables) or "-",
        )
        for s in found
    ]
    print(_table(header, rows))
    return EXIT_OK


def cmd_switch(args: argparse.Namespace) -> int:
    store, manager = _manager(args)
    with store:
        switched = manager.switch(args.name, args.version, timeout=args.timeout)
    print(f"{switched.name} v{switched.version} is live")
    return EXIT_OK


def cmd_mode(args: argparse.Namespace) -> int:
    store, manager = _manager(args)
    with store:
        if args.mode is not None:
            manager.set_mode(args.name, args.mode, timeout=args.timeout)
        mode = manager.mode(args.name)
    print(f"{args.name}: {mode}")
    return EXIT_OK


def cmd_drop(args: argparse.Namespace) -> int:
    store, manager = _manager(args)
    with store:
        dropped = manager.drop(args.name, args.version, force=args.force)
    print(f"dropped {args.name} v{args.version}: {', '.join(dropped) or 'no tables'}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``eventstore projections ...`` to the parser."""
    parser = sub.add_parser("projections", help="run, rebuild and switch projections")
    actions = parser.add_subparsers(dest="action", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_)
        p.add_argument("--url", help="Postgres URL (default: $EVENTSTORE_DATABASE_URL)")
        p.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the event store")
        return p

    run = add("run", "run the projections of module:name until SIGTERM/SIGINT")
    run.add_argument("target", help="module:name of a ProjectionGroup")
    run.add_argument("--lease-ttl", type=float, default=10.0)
    run.add_argument("--poll-interval", type=float, default=1.0)
    run.add_argument("--wake-interval", type=float, default=0.05)
    run.add_argument("--listen", action="store_true")
    run.add_argument("--runner-id", default=None)
    run.add_argument(
        "--no-auto-switch", action="store_true", help="leave rebuilt versions building"
    )
    run.add_argument("--switch-timeout", type=float, default=30.0)
    run.add_argument(
        "--no-create-tables", action="store_true", help="refuse to run when tables are missing"
    )
    run.set_defaults(handler=cmd_run)
    rebuild = add("rebuild", "build a new version in this process, with progress, then switch")
    rebuild.add_argument("name")
    rebuild.add_argument("--target", required=True, help="module:name of a ProjectionGroup")
    rebuild.add_argument("--version", type=int, default=None, help="default: the highest")
    rebuild.add_argument("--no-switch", action="store_true", help="leave it building")
    rebuild.add_argument(
        "--from",
        dest="start",
        default=None,
        metavar="POSITION_OR_TOKEN",
        help="build from a global position or a read_all token, not the start of the log",
    )
    rebuild.add_argument("--timeout", type=float, default=24 * 3600.0)
    rebuild.set_defaults(handler=cmd_rebuild)
    status = add("status", "versions with lag and dead letters")
    status.add_argument("name", nargs="?")
    status.set_defaults(handler=cmd_status)
    list_ = add("list", "versions, when they went live, and their tables")
    list_.add_argument("name", nargs="?")
    list_.set_defaults(handler=cmd_list)
    switch = add("switch", "make a building version live once it has caught up")
    switch.add_argument("name")
    switch.add_argument("--version", type=int, default=None, help="default: the highest building")
    switch.add_argument("--timeout", type=float, default=30.0)
    switch.set_defaults(handler=cmd_switch)
    mode = add("mode", "show, or switch, how the live version is applied: inline or daemon")
    mode.add_argument("name")
    mode.add_argument("mode", nargs="?", choices=("inline", "daemon"), default=None)
    mode.add_argument("--timeout", type=float, default=30.0)
    mode.set_defaults(handler=cmd_mode)
    drop = add("drop", "drop a retired version's tables and checkpoints")
    drop.add_argument("name")
    drop.add_argument("--version", type=int, required=True)
    drop.add_argument("--force", action="store_true", help="also an abandoned building version")
    drop.set_defaults(handler=cmd_drop)
