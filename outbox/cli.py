"""The ``eventstore relay`` commands: run relays, show where they are, retry their dead letters.

Registered through the ``eventstore.cli`` entry-point group (``outbox = "outbox.cli:register"``),
so ``eventstore`` itself never imports the outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from typing import Any

from eventstore.cli._exit import EXIT_ERROR, EXIT_OK
from eventstore.cli.database import resolve_url
from eventstore.errors import ConfigurationError, SubscriptionNotFoundError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.registry import EventRegistry
from eventstore.subscriptions import ShardStatus, SubscriptionStore
from eventstore.subscriptions.runner import install_signal_handlers, tune_gc
from outbox.relay import RELAY_PREFIX, RelayGroup

__all__ = ["load_relays", "register"]


def load_relays(target: str) -> RelayGroup:
    """Imports ``module:name``: a `RelayGroup`, or a function returning one."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"expected module:name, got {target!r}")
    try:
        found: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot import {target!r}: {exc}") from exc
    if callable(found) and not isinstance(found, RelayGroup):
        found = found()
    if not isinstance(found, RelayGroup):
        raise ConfigurationError(f"{target!r} is not a RelayGroup")
    return found


def cmd_run(args: argparse.Namespace) -> int:
    group = load_relays(args.target)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    url = resolve_url(args.url)

    async def main() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        tune_gc()
        await group.run(
            stop,
            url=url,
            schema=args.schema,
            lease_ttl=args.lease_ttl,
            poll_interval=args.poll_interval,
            wake_interval=args.wake_interval,
            listen=args.listen,
            runner_id=args.runner_id,
        )

    asyncio.run(main())
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    name = None if args.name is None else _subscription_name(args.name)
    with SubscriptionStore(
        resolve_url(args.url), registry=EventRegistry(), schema=args.schema
    ) as store:
        shards = [s for s in store.status(name) if s.name.startswith(RELAY_PREFIX)]
        held = {s.name: _held_streams(store, s.name) for s in shards}
    if name is not None and not shards:
        raise SubscriptionNotFoundError(name)
    print(_table(shards, held))
    for shard in shards:
        if shard.last_error:
            print(f"{shard.name} shard {shard.shard}: {shard.last_error}")
    return EXIT_OK


def _subscription_name(name: str) -> str:
    return name if name.startswith(RELAY_PREFIX) else RELAY_PREFIX + name


def _held_streams(store: SubscriptionStore, name: str) -> int:
    return len({d.stream_id for d in store.dead_letters(name)})


def _table(shards: list[ShardStatus], held: dict[str, int]) -> str:
    header = (
        "relay", "shard", "status", "owner", "published", "lag", "oldest s", "held", "dead",
        "error",
    )  # fmt: skip
    rows = [header] + [
        (
            s.name.removeprefix(RELAY_PREFIX),
            f"{s.shard}/{s.shards}",
            s.status,
            s.owner or "-",
            str(s.handled),
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            str(held[s.name]),
            str(s.dead_letters),
            "yes" if s.last_error else "-",
        )
        for s in shards
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def cmd_retry(args: argparse.Namespace) -> int:
    group = load_relays(args.target)
    url = resolve_url(args.url)

    async def retry() -> Any:
        try:
            return await group.retry_dead_letters(
                args.name, url=url, schema=args.schema, stream_id=args.stream
            )
        finally:
            await group.close()

    outcome = asyncio.run(retry())
    print(f"released {len(outcome.released)} stream(s)")
    for stream, error in zip(outcome.failed, outcome.errors, strict=True):
        print(f"still held: {stream}: {error}", file=sys.stderr)
    return EXIT_ERROR if outcome.failed else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``eventstore relay ...`` to the parser."""
    parser = sub.add_parser("relay", help="run outbox relays, see their status, retry")
    actions = parser.add_subparsers(dest="action", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_)
        p.add_argument("--url", help="Postgres URL (default: $EVENTSTORE_DATABASE_URL)")
        p.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the event store")
        return p

    run = add("run", "run the relays of module:name until SIGTERM/SIGINT")
    run.add_argument("target", help="module:name of a RelayGroup (or a function returning one)")
    run.add_argument("--lease-ttl", type=float, default=10.0)
    run.add_argument(
        "--poll-interval", type=float, default=1.0, help="full look at least this often (s)"
    )
    run.add_argument(
        "--wake-interval", type=float, default=0.05, help="snapshot check interval (s)"
    )
    run.add_argument(
        "--listen", action="store_true", help="also wake on NOTIFY eventstore_events.<schema>"
    )
    run.add_argument("--runner-id", default=None)
    run.set_defaults(handler=cmd_run)
    status = add("status", "per relay shard: owner, lag, oldest unpublished, held streams")
    status.add_argument("name", nargs="?", help="one relay (default: all)")
    status.set_defaults(handler=cmd_status)
    retry = add("retry", "publish a relay's held streams again, in order, and release them")
    retry.add_argument("target", help="module:name of the RelayGroup")
    retry.add_argument("name", help="the relay")
    retry.add_argument("--stream", help="only this stream")
    retry.set_defaults(handler=cmd_retry)
