"""Compares the outbox relay to RabbitMQ with the ``faststream-outbox`` package's relay.

Runs in its own environment, so that ``faststream-outbox`` never becomes a dependency of
this project: ``make bench-outbox-faststream`` creates ``.venv-bench-fso`` with the
project and ``benchmarks/requirements-outbox-faststream.txt``, then runs
``.venv-bench-fso/bin/python benchmarks/outbox_faststream.py [--url URL] [--rabbitmq URL]
[--quick] [--json PATH]``. It needs Postgres (a scratch database is made on the server
behind ``--url``, default ``EVENTSTORE_DATABASE_URL`` else a local server) and RabbitMQ on
``--rabbitmq`` (default amqp://guest:guest@127.0.0.1:5672/).

The same ``EVENTS`` messages (20,000, or 3,000 with ``--quick``) go to the same broker
layout (a durable topic exchange ``bench-outbox``, a durable queue bound with ``#``), with
the same bodies (the event's JSON), the same ``cloudEvents_*`` headers and AMQP properties
(``message_id``, ``type``, ``timestamp``, ``content_type``), persistent and ``mandatory``,
on a channel with publisher confirms that raises on a returned message:

- **eventkeeper**: the events are appended beforehand, round-robin over 1,000 streams (as
  in ``benchmarks/outbox.py``); a `Relay` with a `RabbitMQPublisher` (default batch size,
  ``max_in_flight`` 100) runs from the log's start until its checkpoint is caught up.
- **faststream-outbox**: before each round (untimed) the messages are written to its
  outbox table the way its documentation has a service do it: ``broker.publish(body,
  queue=..., session=session, headers=...)`` inside ``async with session.begin()``, 1,000
  rows per transaction, through SQLAlchemy with asyncpg (the driver its docs use, the only
  one its fetch loop can ``LISTEN`` with). The round times its documented relay: a
  FastStream ``RabbitBroker`` publisher stacked on an outbox subscriber, from the start of
  both brokers until the queue holds every message. Its handler passes the stored bytes
  through and sets the same headers and properties (a `RabbitResponse`): FastStream still
  decodes each body's JSON before the call (it always does), but nothing is re-encoded.
  Two subscriber settings are measured: the package defaults (``max_workers=1,
  fetch_batch_size=10``, one ``DELETE`` per row), what its relay tutorial runs, and
  ``tuned``: 32 workers (``--fso-workers``), claims of 200 rows, deletes in batches of
  100, the best a sweep found on a 2-core machine within a Postgres connection budget
  (each worker holds a connection; see ``DEFAULTS`` below). The bar is checked against
  the faster one. FastStream's per-message logging is off on both brokers
  (``logger=None``), the cheaper choice for the package.

Each round starts from a purged queue and is checked: the queue holds exactly ``EVENTS``
messages, and for faststream-outbox the outbox table is empty after its broker stopped.
Rounds of the sides alternate; the table shows medians. The bar of issue 11: eventkeeper
relays at least twice as fast as faststream-outbox; the exit status is 1 when it fails.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

# Python puts this script's folder first on sys.path, where `import outbox` would find
# benchmarks/outbox.py instead of the package: move the folder to the end.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import aio_pika  # noqa: E402
import psycopg  # noqa: E402
from _common import DEFAULT_URL, progress, scratch_database, server_version  # noqa: E402
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitResponse  # noqa: E402
from faststream.rabbit.schemas import Channel  # noqa: E402
from faststream_outbox import OutboxBroker, make_outbox_table  # noqa: E402
from faststream_outbox.annotations import OutboxMessage  # noqa: E402
from sqlalchemy import MetaData, Table, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine  # noqa: E402

from eventstore import Event, EventRegistry, PostgresEventStore  # noqa: E402
from eventstore.migrate import upgrade  # noqa: E402
from eventstore.subscriptions import AsyncSubscriptionStore, SubscriptionStore  # noqa: E402
from outbox import Message, Relay, RelayGroup  # noqa: E402
from outbox.message import binary_headers  # noqa: E402
from outbox.publishers.rabbitmq import HEADER_PREFIX, RabbitMQPublisher  # noqa: E402

MAX_IN_FLIGHT: Final = 100  # the relay's unconfirmed messages, as in benchmarks/outbox.py
STREAMS: Final = 1_000
EXCHANGE: Final = "bench-outbox"
QUEUE: Final = "bench-outbox"
OUTBOX_QUEUE: Final = "bench-events"  # the outbox table's queue column
ROUTING_KEY: Final = "bench.Deposited"  # every message's type: what our relay routes by
ROWS_PER_TRANSACTION: Final = 1_000
BAR: Final = 2.0
CONTENT_TYPE: Final = "content-type"  # faststream-outbox's header for the body's type
ID_HEADER: Final = HEADER_PREFIX + "id"
TYPE_HEADER: Final = HEADER_PREFIX + "type"
TIME_HEADER: Final = HEADER_PREFIX + "time"


class Deposited(Event):
    event_type: ClassVar[str] = "bench.Deposited"
    amount: int
    note: str


REGISTRY: Final = EventRegistry([Deposited])


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    events: int
    rounds: int

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(events=3_000, rounds=1) if quick else cls(events=20_000, rounds=3)


@dataclasses.dataclass(frozen=True, slots=True)
class FsoSettings:
    """One setting of faststream-outbox's subscriber (its keyword arguments)."""

    name: str
    max_workers: int
    fetch_batch_size: int
    terminal_flush_batch_size: int

    def describe(self) -> str:
        return (
            f"max_workers={self.max_workers}, fetch_batch_size={self.fetch_batch_size}, "
            f"terminal_flush_batch_size={self.terminal_flush_batch_size}"
        )


# The package's defaults (what its relay tutorial runs), and the best this script found
# on a 2-core machine: throughput grows with the workers (each waits for one confirm at a
# time) but each holds a Postgres connection, so 32 by default (`--fso-workers`).
DEFAULTS: Final = FsoSettings("defaults", 1, fetch_batch_size=10, terminal_flush_batch_size=1)
TUNED_WORKERS: Final = 32


def tuned(workers: int) -> FsoSettings:
    return FsoSettings("tuned", workers, fetch_batch_size=200, terminal_flush_batch_size=100)


@dataclasses.dataclass
class Side:
    """The rounds of one side: wall seconds and this process's CPU seconds per round."""

    name: str
    events: int
    settings: str
    seconds: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / statistics.median(self.seconds)

    @property
    def cpu_us(self) -> float:
        """Microseconds of CPU (user + system, every thread) per message, the median."""
        return statistics.median(self.cpu) / self.events * 1e6

    def add(self, timed: tuple[float, float]) -> None:
        self.seconds.append(timed[0])
        self.cpu.append(timed[1])

    def as_dict(self) -> dict[str, Any]:
        rates = [self.events / s for s in self.seconds]
        return {
            **dataclasses.asdict(self),
            "rates": rates,
            "median_rate": self.rate,
            "median_cpu_us_per_message": self.cpu_us,
        }


# Filling the event log (as benchmarks/outbox.py does) and the messages it becomes.


def fill(url: str, events: int) -> None:
    """Appends ``events`` events round-robin over the streams, a round per transaction."""
    with PostgresEventStore(url, registry=REGISTRY) as store, psycopg.connect(url) as conn:
        for start in range(0, events, STREAMS):
            with conn.transaction():
                for n in range(start, min(events, start + STREAMS)):
                    event = Deposited(amount=n, note="x" * 100)
                    store.append(f"account-{n % STREAMS}", event, conn=conn)


async def all_messages(url: str, events: int) -> list[Message]:
    """Returns the messages the relay makes of the log: what both sides publish."""
    relay = Relay("messages", RabbitMQPublisher(), source="//bench", enqueued=False)
    messages: list[Message] = []
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        async for page in store.read_all():
            messages += relay.messages(page.events)
    assert len(messages) == events, (len(messages), events)
    return messages


# RabbitMQ.


async def rabbitmq_fresh_queue(amqp: str) -> None:
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.bind(exchange, "#")
        await queue.purge()


async def queue_count(channel: aio_pika.abc.AbstractChannel) -> int:
    queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
    return int(queue.declaration_result.message_count or 0)


async def rabbitmq_remove(amqp: str) -> None:
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)
        await channel.exchange_delete(EXCHANGE)


async def queued_all(amqp: str, events: int, timeout: float = 10, every: float = 0.05) -> int:
    """Returns the queue's count once it is ``events``, or the last one after ``timeout``.

    Confirmed messages are counted by the queue a moment later: poll with a deadline, one
    passive declare on one channel every ``every`` seconds.
    """
    deadline = time.monotonic() + timeout
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel()
        while True:
            queued = await queue_count(channel)
            if queued >= events or time.monotonic() > deadline:
                return queued
            await asyncio.sleep(every)


# eventkeeper: the relay round of benchmarks/outbox.py.


async def eventkeeper_round(url: str, amqp: str, events: int) -> tuple[float, float]:
    """Publishes every event through a relay from the log's start; returns the wall and
    CPU seconds."""
    publisher = RabbitMQPublisher(amqp, exchange=EXCHANGE)
    relay = Relay(
        "rabbitmq", publisher, source="//bench", max_in_flight=MAX_IN_FLIGHT, enqueued=False
    )
    group = RelayGroup(REGISTRY, (relay,))
    with SubscriptionStore(url, registry=REGISTRY) as steering:
        steering.reset(relay.subscription.name, to_end=False)  # nothing on the first round
    stop = asyncio.Event()
    started, started_cpu = time.perf_counter(), time.process_time()
    task = asyncio.create_task(group.run(stop, url=url, poll_interval=0.1, lease_ttl=10))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY) as subscriptions:
            await subscriptions.wait_until_caught_up(
                relay.subscription.name, timeout=max(60, events / 100)
            )
        return time.perf_counter() - started, time.process_time() - started_cpu
    finally:
        stop.set()
        await task


# faststream-outbox.


def sqlalchemy_url(url: str) -> str:
    """Returns the libpq URL with SQLAlchemy's asyncpg driver."""
    return "postgresql+asyncpg://" + url.split("://", 1)[1]


def row_headers(message: Message) -> dict[str, str]:
    """Returns the headers stored with a message's outbox row: ours, and its content type."""
    headers = binary_headers(message, HEADER_PREFIX)
    headers[CONTENT_TYPE] = message.datacontenttype
    return headers


async def fso_fresh_table(engine: AsyncEngine) -> Table:
    """Creates a new outbox table (and its indexes) in place of the last round's."""
    metadata = MetaData()
    table = make_outbox_table(metadata, table_name="fso_outbox")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    return table


async def fso_fill(engine: AsyncEngine, table: Table, messages: Sequence[Message]) -> None:
    """Writes the messages to the outbox as a service does: ``publish`` in transactions."""
    producer = OutboxBroker(engine, outbox_table=table, logger=None)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    for start in range(0, len(messages), ROWS_PER_TRANSACTION):
        async with sessions() as session, session.begin():
            for message in messages[start : start + ROWS_PER_TRANSACTION]:
                await producer.publish(
                    message.data, queue=OUTBOX_QUEUE, session=session, headers=row_headers(message)
                )
    async with engine.begin() as conn:
        await conn.execute(text(f"ANALYZE {table.name}"))


async def relay(message: OutboxMessage) -> RabbitResponse:
    """The relay's handler: the stored body and headers, as our publisher sends them."""
    stored = message.headers
    return RabbitResponse(
        message.body,
        headers={k: v for k, v in stored.items() if k.startswith(HEADER_PREFIX)},
        content_type=stored[CONTENT_TYPE],
        message_id=stored[ID_HEADER],
        message_type=stored[TYPE_HEADER],
        timestamp=dt.datetime.fromisoformat(stored[TIME_HEADER]),
    )


async def fso_round(
    url: str, amqp: str, messages: Sequence[Message], fso: FsoSettings
) -> tuple[float, float]:
    """Fills the outbox (untimed), then times its relay until the queue holds everything;
    returns the wall and CPU seconds."""
    engine = create_async_engine(sqlalchemy_url(url), pool_size=fso.max_workers + 2)
    try:
        table = await fso_fresh_table(engine)
        await fso_fill(engine, table, messages)
        rabbit = RabbitBroker(
            amqp,
            default_channel=Channel(publisher_confirms=True, on_return_raises=True),
            logger=None,
        )
        publisher = rabbit.publisher(
            exchange=RabbitExchange(EXCHANGE, type=ExchangeType.TOPIC, durable=True),
            routing_key=ROUTING_KEY,
            persist=True,
            mandatory=True,
            timeout=10,
        )
        broker = OutboxBroker(engine, outbox_table=table, logger=None)
        subscriber = broker.subscriber(
            OUTBOX_QUEUE,
            max_workers=fso.max_workers,
            fetch_batch_size=fso.fetch_batch_size,
            terminal_flush_batch_size=fso.terminal_flush_batch_size,
        )
        publisher(subscriber(relay))
        started, started_cpu = time.perf_counter(), time.process_time()
        await rabbit.start()
        await broker.start()
        try:
            # Polled like the relay's `wait_until_caught_up` polls its checkpoint (20 ms).
            timeout = max(120, len(messages) / 50)
            queued = await queued_all(amqp, len(messages), timeout=timeout, every=0.02)
            timed = time.perf_counter() - started, time.process_time() - started_cpu
        finally:
            await broker.stop()
            await rabbit.stop()
        assert queued == len(messages), ("faststream-outbox", queued)
        async with engine.connect() as conn:
            left = (await conn.execute(text(f"SELECT count(*) FROM {table.name}"))).scalar_one()
        assert left == 0, f"{left} rows left in the outbox"
        return timed
    finally:
        await engine.dispose()


# Conditions and output.


async def rabbitmq_version(amqp: str) -> str:
    connection = await aio_pika.connect(amqp)
    async with connection:
        properties = connection.transport.connection.server_properties  # type: ignore[union-attr]
        version = properties.get("version", b"?")
    return version.decode() if isinstance(version, bytes) else str(version)


def conditions(
    url: str, rabbitmq: str, settings: Settings, fsos: Sequence[FsoSettings]
) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        postgres = server_version(conn)
    names = ("eventkeeper", "faststream-outbox", "faststream", "aio-pika", "asyncpg", "sqlalchemy")
    return {
        "postgres": postgres,
        "rabbitmq": rabbitmq,
        "packages": {name: importlib.metadata.version(name) for name in names},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "events": settings.events,
        "rounds": settings.rounds,
        "streams": STREAMS,
        "max_in_flight": MAX_IN_FLIGHT,
        "faststream_outbox_settings": {fso.name: dataclasses.asdict(fso) for fso in fsos},
    }


def report(info: dict[str, Any], ours: Side, theirs: Sequence[Side]) -> tuple[str, bool]:
    info["loadavg_end"] = os.getloadavg()[0]
    packages = ", ".join(f"{name} {version}" for name, version in info["packages"].items())
    print(
        f"conditions: Postgres {info['postgres']}, RabbitMQ {info['rabbitmq']}, {packages}, "
        f"Python {info['python']}, {info['cpus']} CPUs, load {info['loadavg_start']:.2f} at "
        f"start / {info['loadavg_end']:.2f} at end; {info['events']:,} messages "
        f"({STREAMS:,} streams), {info['rounds']} round(s) per side, publisher confirms, "
        "persistent, mandatory"
    )
    for side in (ours, *theirs):
        print(f"  {side.name}: {side.settings}")
    print()
    print(f"{'side':32} {'rounds (msg/s)':>26} {'median':>9} {'ratio':>7} {'CPU us/msg':>11}")
    for side in (ours, *theirs):
        rounds = " ".join(f"{side.events / s:,.0f}" for s in side.seconds)
        ratio = "" if side is ours else f"{ours.rate / side.rate:7.2f}"
        print(f"{side.name:32} {rounds:>26} {side.rate:9,.0f} {ratio:>7} {side.cpu_us:11,.0f}")
    print()
    best = max(theirs, key=lambda side: side.rate)
    ratio = ours.rate / best.rate
    label = (
        f"relay to RabbitMQ vs {best.name} (the faster setting): ratio {ratio:.2f} "
        f"(bar >= {BAR:.1f})"
    )
    print(f"{'PASS' if ratio >= BAR else 'FAIL'}  {label}")
    return label, ratio >= BAR


async def run(args: argparse.Namespace, settings: Settings, url: str) -> int:
    fsos = (DEFAULTS, tuned(args.fso_workers))
    info = conditions(url, await rabbitmq_version(args.rabbitmq), settings, fsos)
    progress(f"filling {settings.events:,} events")
    fill(url, settings.events)
    messages = await all_messages(url, settings.events)
    relay_settings = f"Relay + RabbitMQPublisher, max_in_flight={MAX_IN_FLIGHT}, default batch size"
    ours = Side("eventkeeper", settings.events, relay_settings)
    theirs = [
        Side(f"faststream-outbox ({fso.name})", settings.events, fso.describe()) for fso in fsos
    ]
    try:
        for round_ in range(settings.rounds):
            await rabbitmq_fresh_queue(args.rabbitmq)
            timed = await eventkeeper_round(url, args.rabbitmq, settings.events)
            queued = await queued_all(args.rabbitmq, settings.events)
            assert queued == settings.events, ("eventkeeper", queued)
            ours.add(timed)
            progress(f"  round {round_ + 1} eventkeeper: {settings.events / timed[0]:,.0f}/s")
            for fso, side in zip(fsos, theirs, strict=True):
                await rabbitmq_fresh_queue(args.rabbitmq)
                timed = await fso_round(url, args.rabbitmq, messages, fso)
                side.add(timed)
                progress(f"  round {round_ + 1} {side.name}: {settings.events / timed[0]:,.0f}/s")
    finally:
        await rabbitmq_remove(args.rabbitmq)
    label, ok = report(info, ours, theirs)
    if args.json is not None:
        document = {
            **info,
            "results": [side.as_dict() for side in (ours, *theirs)],
            "bars": [{"label": label, "minimum": BAR, "ok": ok}],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("EVENTSTORE_DATABASE_URL") or DEFAULT_URL,
        help="admin URL of the Postgres server (a scratch database is made there)",
    )
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--quick", action="store_true", help="fewer messages, one round")
    parser.add_argument(
        "--fso-workers",
        type=int,
        default=TUNED_WORKERS,
        metavar="N",
        help="max_workers of faststream-outbox's tuned setting (N + 1 Postgres connections)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.of(args.quick)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    with scratch_database(args.url) as url:
        upgrade(url)
        return asyncio.run(run(args, settings, url))


if __name__ == "__main__":
    sys.exit(main())
