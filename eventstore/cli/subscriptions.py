"""The ``eventstore subscriptions`` commands: run, status, pause, resume, reset, dead letters."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from typing import Any

from eventstore.cli._exit import EXIT_ERROR, EXIT_OK
from eventstore.cli.database import add_database_options, resolve_url
from eventstore.errors import ConfigurationError, SubscriptionNotFoundError
from eventstore.postgres.subscriptions import SubscriptionStore
from eventstore.registry import EventRegistry
from eventstore.subscriptions.engine import discard_dead_letters, retry_dead_letters
from eventstore.subscriptions.engine_async import retry_dead_letters as aretry_dead_letters
from eventstore.subscriptions.records import ShardStatus
from eventstore.subscriptions.runner import SubscriptionRunner, install_signal_handlers, tune_gc
from eventstore.subscriptions.subscription import SubscriptionGroup

__all__ = ["load_group", "register"]


def load_group(target: str) -> SubscriptionGroup:
    """Imports ``module:name``: a `SubscriptionGroup`, or a function returning one."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected module:name, got {target!r}")
    try:
        found: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {target!r}: {exc}") from exc
    if callable(found) and not isinstance(found, SubscriptionGroup):
        found = found()
    if not isinstance(found, SubscriptionGroup):
        raise ConfigurationError(f"{target!r} is not a SubscriptionGroup")
    return found


def _store(args: argparse.Namespace, registry: EventRegistry | None = None) -> SubscriptionStore:
    return SubscriptionStore(
        resolve_url(args.url), registry=registry or EventRegistry(), schema=args.schema
    )


def cmd_run(args: argparse.Namespace) -> int:
    group = load_group(args.target)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    runner = SubscriptionRunner(
        group.subscriptions,
        registry=group.registry,
        url=resolve_url(args.url),
        schema=args.schema,
        lease_ttl=args.lease_ttl,
        poll_interval=args.poll_interval,
        wake_interval=args.wake_interval,
        listen=args.listen,
        runner_id=args.runner_id,
    )

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        tune_gc()
        await runner.run(stop)

    asyncio.run(main())
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    with _store(args) as store:
        shards = store.status(args.name)
        oldest = store.oldest_transaction()
    if args.name and not shards:
        raise SubscriptionNotFoundError(args.name)
    print(_table(shards))
    if oldest is not None:
        print(
            f"oldest open writing transaction: pid {oldest.pid}, "
            f"open {oldest.age.total_seconds():.1f} s (it holds back the events after it)"
        )
    return EXIT_OK


def _table(shards: list[ShardStatus]) -> str:
    header = ("subscription", "shard", "status", "owner", "handled", "lag", "lag s", "dead")
    rows = [header] + [
        (
            s.name,
            f"{s.shard}/{s.shards}",
            s.status,
            s.owner or "-",
            str(s.handled),
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            str(s.dead_letters),
        )
        for s in shards
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def cmd_pause_resume(args: argparse.Namespace) -> int:
    status = "paused" if args.action == "pause" else "running"
    with _store(args) as store:
        shards = store.set_status(args.name, status)
    if not shards:
        raise SubscriptionNotFoundError(args.name)
    print(f"{args.name}: {len(shards)} shard(s) {status}")
    return EXIT_OK


def cmd_reset(args: argparse.Namespace) -> int:
    with _store(args) as store:
        shards = store.reset(args.name, to_end=args.to == "end")
    if not shards:
        raise SubscriptionNotFoundError(args.name)
    print(f"{args.name}: {len(shards)} shard(s) reset to the {args.to} of the log")
    return EXIT_OK


def cmd_dead_letters(args: argparse.Namespace) -> int:
    if args.dl_action == "list":
        with _store(args) as store:
            for d in store.dead_letters(args.name, status=None if args.all else "parked"):
                print(
                    f"#{d.id} {d.status} position {d.global_position} {d.stream_id}@{d.version} "
                    f"{d.event_type} {d.reason}: {d.error or '-'}"
                )
        return EXIT_OK
    if args.dl_action == "discard":
        with _store(args) as store:
            print(f"discarded {discard_dead_letters(store, args.ids)} dead letter(s)")
        return EXIT_OK
    return _retry(args)


def _retry(args: argparse.Namespace) -> int:
    group = load_group(args.target)
    sub = group.get(args.name)
    url = resolve_url(args.url)
    if sub.is_async:
        from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore

        async def run() -> Any:
            async with AsyncSubscriptionStore(
                url, registry=group.registry, schema=args.schema
            ) as store:
                return await aretry_dead_letters(store, sub, args.stream)

        outcome = asyncio.run(run())
    else:
        with SubscriptionStore(url, registry=group.registry, schema=args.schema) as store:
            outcome = retry_dead_letters(store, sub, args.stream)
    print(f"released {len(outcome.released)} stream(s)")
    for stream, error in zip(outcome.failed, outcome.errors, strict=True):
        print(f"still held: {stream}: {error}", file=sys.stderr)
    return EXIT_ERROR if outcome.failed else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``eventstore subscriptions ...`` to the parser."""
    parser = sub.add_parser("subscriptions", help="run and steer subscriptions")
    actions = parser.add_subparsers(dest="action", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_)
        add_database_options(p)
        return p

    run = add("run", "run the subscriptions of module:name until SIGTERM/SIGINT")
    run.add_argument("target", help="module:name of a SubscriptionGroup")
    run.add_argument(
        "--lease-ttl", type=float, default=10.0, help="a shard's lease lasts this long (s)"
    )
    run.add_argument(
        "--poll-interval", type=float, default=1.0, help="full look at least this often (s)"
    )
    run.add_argument(
        "--wake-interval", type=float, default=0.05, help="snapshot check interval (s)"
    )
    run.add_argument(
        "--listen", action="store_true", help="also wake on NOTIFY eventstore_events.<schema>"
    )
    run.add_argument("--runner-id", help="this runner's name in leases (default: host:pid:random)")
    run.set_defaults(handler=cmd_run)
    status = add("status", "owners, lag, dead letters per shard")
    status.add_argument("name", nargs="?", help="one subscription (default: all)")
    status.set_defaults(handler=cmd_status)
    for action in ("pause", "resume"):
        p = add(action, f"{action} every shard of a subscription")
        p.add_argument("name", help="the subscription")
        p.set_defaults(handler=cmd_pause_resume)
    reset = add("reset", "move a subscription to the start or the end of the log")
    reset.add_argument("name", help="the subscription")
    reset.add_argument(
        "--to", choices=["start", "end"], required=True, help="the start or the end of the log"
    )
    reset.set_defaults(handler=cmd_reset)
    dead = add("dead-letters", "list, retry or discard dead letters")
    dead.add_argument("dl_action", choices=["list", "retry", "discard"], help="what to do")
    dead.add_argument("name", help="the subscription")
    dead.add_argument("ids", nargs="*", type=int, help="discard: the dead letter ids")
    dead.add_argument("--target", help="retry: module:name of the SubscriptionGroup")
    dead.add_argument("--stream", help="retry: only this stream")
    dead.add_argument("--all", action="store_true", help="list: also retried and discarded")
    dead.set_defaults(handler=cmd_dead_letters)
