"""Measures the outbox relay against raw broker clients, and append-to-broker latency.

Run ``.venv/bin/python benchmarks/outbox.py [--url URL] [--quick] [--json PATH]`` (or
``make bench-outbox``) with NATS JetStream on ``--nats`` (default nats://127.0.0.1:4222)
and RabbitMQ on ``--rabbitmq`` (default amqp://guest:guest@127.0.0.1:5672/). The script
creates a scratch database on the server behind ``--url`` (default:
``EVENTSTORE_DATABASE_URL``, else a local server), fills it with ``EVENTS`` events spread
round-robin over 1,000 streams, and measures, in one run:

- relay to NATS JetStream: a `Relay` with a `NatsPublisher` (its default batches of
  1,000 events, ``max_in_flight=100``: a sliding window of 100 unconfirmed messages)
  publishing every event, from its start until it is caught up, against a raw nats-py
  loop publishing the same messages (same subjects, bodies and headers, read and built
  beforehand) with ``js.publish``, each waiting for its ack, 100 under way at any time (a
  sliding window too: a new publish starts as soon as one returns);
- relay to RabbitMQ: the same with a `RabbitMQPublisher` (publisher confirms, persistent,
  mandatory) against a raw aio-pika loop on a channel with publisher confirms, 100
  ``exchange.publish`` under way at any time, the same messages and flags;
- for information, the relay to a `RecordingPublisher` (in memory, no broker): what
  reading, decoding, mapping and checkpointing cost on their own;
- append-to-broker latency: two writer processes append single events at 1,000 events/s
  in total while a relay (default runner settings) publishes them to NATS; a core NATS
  subscriber in the relay's process notes when each message arrives. The latency of an
  event is its arrival time minus the time its writer's ``append`` returned (the commit),
  both from ``time.time()`` on this machine. It runs with the runner's default
  ``wake_interval`` (a look at Postgres's snapshot every 50 ms; the bar), then, for
  information, with 10 ms.

Each side of a throughput scenario publishes to a fresh JetStream stream or a purged
queue, and the round is checked: the broker holds exactly ``EVENTS`` messages. Rounds of
the two sides alternate; the table shows medians. The exit status is 1 when a bar fails.
The comparison with the ``faststream-outbox`` package runs in its own environment:
``make bench-outbox-faststream`` (benchmarks/outbox_faststream.py, benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Coroutine, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar, Final

# This script is named like the package it measures: Python puts its folder first on
# sys.path, where `import outbox` would find the script. Move the folder to the end.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE] + [_HERE]

import aio_pika  # noqa: E402
import nats  # noqa: E402
import nats.js.errors  # noqa: E402
import psycopg  # noqa: E402
from _common import DEFAULT_URL, progress, scratch_database, server_version  # noqa: E402
from nats.js import JetStreamContext  # noqa: E402

from eventstore import Event, EventRegistry, PostgresEventStore  # noqa: E402
from eventstore.migrate import upgrade  # noqa: E402
from eventstore.subscriptions import AsyncSubscriptionStore, SubscriptionStore  # noqa: E402
from outbox import Message, Publisher, RecordingPublisher, Relay, RelayGroup  # noqa: E402
from outbox.message import binary_headers  # noqa: E402
from outbox.publishers.nats import HEADER_PREFIX, MSG_ID, NatsPublisher  # noqa: E402
from outbox.publishers.rabbitmq import RabbitMQPublisher, _amqp_message  # noqa: E402

BATCH: Final = 100  # the relay's batch size, and the raw loops' messages in flight
STREAMS: Final = 1_000
EXCHANGE: Final = "bench-outbox"
QUEUE: Final = "bench-outbox"
SUBJECT: Final = "bench-outbox"
LATENCY_RATE: Final = 1_000.0
WRITERS: Final = 2
THROUGHPUT_BAR: Final = 0.7
LATENCY_BAR_MS: Final = 100.0
# The runner's default snapshot watch (the bar), then a tighter one for information.
WAKE_INTERVALS: Final = (0.05, 0.01)


class Deposited(Event):
    event_type: ClassVar[str] = "bench.Deposited"
    amount: int
    note: str


REGISTRY: Final = EventRegistry([Deposited])


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    events: int
    rounds: int
    latency_seconds: float

    @classmethod
    def of(cls, quick: bool) -> Settings:
        if quick:
            return cls(events=3_000, rounds=1, latency_seconds=3.0)
        return cls(events=20_000, rounds=3, latency_seconds=10.0)


@dataclasses.dataclass
class Throughput:
    """The rounds of one throughput scenario: seconds per round of each side."""

    name: str
    events: int
    relay: list[float] = dataclasses.field(default_factory=list)
    raw: list[float] = dataclasses.field(default_factory=list)

    def rate(self, seconds: list[float]) -> float:
        return self.events / statistics.median(seconds)

    @property
    def ratio(self) -> float:
        return self.rate(self.relay) / self.rate(self.raw)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio}


@dataclasses.dataclass
class Latency:
    """Append-to-broker latencies in milliseconds, and the rate the writers achieved."""

    latencies_ms: list[float]
    appended: int
    seconds: float
    wake_interval: float

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "wake_interval": self.wake_interval,
            "appended": self.appended,
            "seconds": self.seconds,
            "rate": self.appended / self.seconds,
            "p50_ms": self.percentile(0.5),
            "p99_ms": self.percentile(0.99),
            "max_ms": max(self.latencies_ms),
        }


# Filling the database.


def fill(url: str, events: int) -> None:
    """Appends ``events`` events round-robin over the streams, a round per transaction."""
    with PostgresEventStore(url, registry=REGISTRY) as store, psycopg.connect(url) as conn:
        for start in range(0, events, STREAMS):
            with conn.transaction():
                for n in range(start, min(events, start + STREAMS)):
                    event = Deposited(amount=n, note="x" * 100)
                    store.append(f"account-{n % STREAMS}", event, conn=conn)


# Relay rounds.


async def relay_round(url: str, name: str, publisher: Publisher, events: int) -> float:
    """Publishes every event through a relay from the log's start; returns the seconds."""
    relay = Relay(name, publisher, source="//bench", max_in_flight=BATCH, enqueued=False)
    group = RelayGroup(REGISTRY, (relay,))
    with SubscriptionStore(url, registry=REGISTRY) as steering:
        steering.reset(relay.subscription.name, to_end=False)  # nothing on the first round
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(group.run(stop, url=url, poll_interval=0.1, lease_ttl=10))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY) as subscriptions:
            await subscriptions.wait_until_caught_up(
                relay.subscription.name, timeout=max(60, events / 100)
            )
        return time.perf_counter() - started
    finally:
        stop.set()
        await task


async def all_messages(url: str, events: int) -> list[Message]:
    """Returns the messages a relay makes of the log (for the raw loops to publish)."""
    relay = Relay("raw", NatsPublisher(), source="//bench", enqueued=False)
    messages: list[Message] = []
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        async for page in store.read_all():
            messages += relay.messages(page.events)
    assert len(messages) == events, (len(messages), events)
    return messages


async def measure_ceiling(url: str, events: int) -> float:
    """Returns events/s of a relay to an in-memory publisher: no broker, the rest alone."""
    publisher = RecordingPublisher()
    seconds = await relay_round(url, "in-memory", publisher, events)
    assert len(publisher.published) == events
    return events / seconds


# NATS JetStream.


async def nats_fresh_stream(js: JetStreamContext, name: str) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(name)
    await js.add_stream(name=name, subjects=[f"{name}.>"])


async def nats_stored(js: JetStreamContext, name: str) -> int:
    return int((await js.stream_info(name)).state.messages)


async def in_flight(limit: int, calls: Iterator[Coroutine[Any, Any, Any]]) -> None:
    """Runs the calls with ``limit`` of them under way at any time: a sliding window, each
    call starting as soon as one returns (the strongest plain loop with that many in
    flight; the first error propagates)."""
    running: set[asyncio.Future[Any]] = set()
    for call in calls:
        if len(running) >= limit:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        running.add(asyncio.ensure_future(call))
    for task in asyncio.as_completed(running):
        await task


async def raw_nats(server: str, stream: str, messages: Sequence[Message]) -> float:
    prepared = []
    for message in messages:
        headers = binary_headers(message, HEADER_PREFIX)
        headers[MSG_ID] = message.id
        headers["Content-Type"] = message.datacontenttype
        prepared.append((f"{stream}.{message.type}", message.data, headers))
    started = time.perf_counter()
    client = await nats.connect(server)
    js = client.jetstream(timeout=10)
    await in_flight(BATCH, (js.publish(s, d, headers=h, timeout=10) for s, d, h in prepared))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


async def measure_nats(
    url: str, server: str, messages: Sequence[Message], settings: Settings
) -> Throughput:
    result = Throughput("relay to NATS JetStream vs raw nats-py", settings.events)
    client = await nats.connect(server)
    js = client.jetstream()
    try:
        for round_ in range(settings.rounds):
            for side in ("relay", "raw"):
                stream = f"BENCH_{side.upper()}"
                await nats_fresh_stream(js, stream)
                if side == "relay":
                    publisher = NatsPublisher(server, subject=lambda m, s=stream: f"{s}.{m.type}")
                    seconds = await relay_round(url, "nats", publisher, settings.events)
                    result.relay.append(seconds)
                else:
                    seconds = await raw_nats(server, stream, messages)
                    result.raw.append(seconds)
                stored = await nats_stored(js, stream)
                assert stored == settings.events, (side, stored)
                progress(f"  nats round {round_ + 1} {side}: {settings.events / seconds:,.0f}/s")
                await js.delete_stream(stream)
    finally:
        await client.close()
    return result


# RabbitMQ.


async def rabbitmq_fresh_queue(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EXCHANGE, "topic", durable=True)
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.bind(exchange, "#")
        await queue.purge()


async def rabbitmq_queued(url: str) -> int:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def rabbitmq_remove(url: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(QUEUE)
        await channel.exchange_delete(EXCHANGE)


async def raw_rabbitmq(url: str, messages: Sequence[Message]) -> float:
    prepared = [(_amqp_message(m), m.type) for m in messages]
    started = time.perf_counter()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(EXCHANGE, ensure=False)
        await in_flight(
            BATCH, (exchange.publish(m, key, mandatory=True, timeout=10) for m, key in prepared)
        )
        elapsed = time.perf_counter() - started
    return elapsed


async def queued_all(url: str, events: int) -> int:
    # Confirmed messages are counted by the queue a moment later: poll with a deadline.
    deadline = time.monotonic() + 10
    while True:
        queued = await rabbitmq_queued(url)
        if queued == events or time.monotonic() > deadline:
            return queued
        await asyncio.sleep(0.05)


async def measure_rabbitmq(
    url: str, amqp: str, messages: Sequence[Message], settings: Settings
) -> Throughput:
    result = Throughput("relay to RabbitMQ vs raw aio-pika (confirms)", settings.events)
    try:
        for round_ in range(settings.rounds):
            for side in ("relay", "raw"):
                await rabbitmq_fresh_queue(amqp)
                if side == "relay":
                    publisher = RabbitMQPublisher(amqp, exchange=EXCHANGE)
                    seconds = await relay_round(url, "rabbitmq", publisher, settings.events)
                    result.relay.append(seconds)
                else:
                    seconds = await raw_rabbitmq(amqp, messages)
                    result.raw.append(seconds)
                queued = await queued_all(amqp, settings.events)
                assert queued == settings.events, (side, queued)
                progress(
                    f"  rabbitmq round {round_ + 1} {side}: {settings.events / seconds:,.0f}/s"
                )
    finally:
        await rabbitmq_remove(amqp)
    return result


# Latency: writer processes at a steady rate, a relay and a subscriber in this process.


def _writer_main(pipe: Connection, url: str, index: int) -> None:
    """Appends at the commanded rate from ``start`` to ``stop`` (time.time()); reports
    each event id with the time its append returned."""
    with PostgresEventStore(url, registry=REGISTRY, min_size=1, max_size=1) as store:
        store.append(f"warm-{index}", Deposited(amount=0, note=""))
        pipe.send("ready")
        rate, start, stop = pipe.recv()
        committed: list[tuple[str, float]] = []
        n = 0
        while True:
            due = start + n / rate
            if due >= stop:
                break
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)  # the writer's pace: the next append is due then
            result = store.append(f"live-{index}-{n % 100}", Deposited(amount=n, note="x"))
            committed.append((str(result.event_ids[0]), time.time()))
            n += 1
        pipe.send(committed)


async def measure_latency(
    url: str, server: str, settings: Settings, wake_interval: float
) -> Latency:
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for index in range(WRITERS):
        parent, child = context.Pipe()
        process = context.Process(target=_writer_main, args=(child, url, index), daemon=True)
        process.start()
        pipes.append(parent)
        processes.append(process)
    for pipe in pipes:
        await asyncio.to_thread(pipe.recv)
    arrivals: dict[str, float] = {}

    async def arrived(msg: Any) -> None:
        arrivals[msg.headers[MSG_ID]] = time.time()

    client = await nats.connect(server)
    js = client.jetstream()
    await nats_fresh_stream(js, "BENCH_LIVE")
    await client.subscribe("BENCH_LIVE.>", cb=arrived)
    publisher = NatsPublisher(server, subject=lambda m: f"BENCH_LIVE.{m.type}")
    name = f"live-{round(wake_interval * 1000)}ms"
    relay = Relay(name, publisher, source="//bench", batch_size=BATCH, start="end")
    group = RelayGroup(REGISTRY, (relay,))
    stop = asyncio.Event()
    task = asyncio.create_task(group.run(stop, url=url, wake_interval=wake_interval))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY) as subscriptions:
            await subscriptions.wait_until_caught_up(relay.subscription.name, timeout=30)
        start = time.time() + 0.5
        for pipe in pipes:
            pipe.send((LATENCY_RATE / WRITERS, start, start + settings.latency_seconds))
        reports = await asyncio.gather(*(asyncio.to_thread(p.recv) for p in pipes))
        committed = dict(pair for report in reports for pair in report)
        deadline = time.monotonic() + 30
        while True:
            if committed.keys() <= arrivals.keys() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)  # the poll interval of a condition, with a deadline
        missing = len(committed.keys() - arrivals.keys())
        assert not missing, f"{missing} appended events never arrived"
    finally:
        stop.set()
        await task
        await js.delete_stream("BENCH_LIVE")
        await client.close()
        for process in processes:
            process.join(timeout=10)
    last = max(committed.values())
    latencies = [(arrivals[i] - t) * 1000 for i, t in committed.items()]
    return Latency(latencies, len(committed), last - start, wake_interval)


# Conditions and output.


async def broker_versions(server: str, amqp: str) -> dict[str, str]:
    client = await nats.connect(server)
    version = client.connected_server_version
    nats_version = f"{version.major}.{version.minor}.{version.patch}"
    await client.close()
    connection = await aio_pika.connect(amqp)
    async with connection:
        properties = connection.transport.connection.server_properties  # type: ignore[union-attr]
        rabbit_version = properties.get("version", b"?")
    if isinstance(rabbit_version, bytes):
        rabbit_version = rabbit_version.decode()
    return {"nats-server": nats_version, "rabbitmq": str(rabbit_version)}


def conditions(url: str, versions: dict[str, str], settings: Settings) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        postgres = server_version(conn)
    packages = {p: importlib.metadata.version(p) for p in ("nats-py", "aio-pika")}
    return {
        "postgres": postgres,
        **versions,
        **packages,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "events": settings.events,
        "rounds": settings.rounds,
        "batch": BATCH,
        "streams": STREAMS,
        "latency_seconds": settings.latency_seconds,
    }


def report(
    info: dict[str, Any],
    throughputs: Sequence[Throughput],
    ceiling: float,
    latencies: Sequence[Latency],
) -> list[tuple[str, bool]]:
    print(
        f"conditions: Postgres {info['postgres']}, nats-server {info['nats-server']}, "
        f"RabbitMQ {info['rabbitmq']}, nats-py {info['nats-py']}, aio-pika {info['aio-pika']}, "
        f"Python {info['python']}, {info['cpus']} CPUs, load {info['loadavg_start']:.2f} at "
        f"start / {os.getloadavg()[0]:.2f} at end; {info['events']:,} events over "
        f"{STREAMS:,} streams, {BATCH} messages in flight on both sides (the relay's "
        "default batches of 1,000), "
        f"{info['rounds']} round(s) per side"
    )
    print()
    print(f"{'scenario':48} {'relay/s':>9} {'raw/s':>9} {'ratio':>6}")
    for t in throughputs:
        relay, raw = t.rate(t.relay), t.rate(t.raw)
        print(f"{t.name:48} {relay:9,.0f} {raw:9,.0f} {t.ratio:6.2f}")
    print(f"{'relay to an in-memory publisher (no broker)':48} {ceiling:9,.0f}")
    print()
    for latency in latencies:
        figures = latency.as_dict()
        print(
            f"append-to-broker latency (NATS, runner wake_interval {latency.wake_interval} s), "
            f"{figures['rate']:,.0f} events/s for {latency.seconds:.1f} s from {WRITERS} "
            f"writers: p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
            f"max {figures['max_ms']:.1f} ms"
        )
    print("faststream-outbox: compared in its own environment by make bench-outbox-faststream")
    print()
    bars = [
        (f"{t.name}: ratio {t.ratio:.2f} (bar >= {THROUGHPUT_BAR})", t.ratio >= THROUGHPUT_BAR)
        for t in throughputs
    ]
    p99 = latencies[0].percentile(0.99)  # the default runner settings carry the bar
    bars.append(
        (
            f"latency at {LATENCY_RATE:,.0f} events/s, default runner: p99 {p99:.1f} ms "
            f"(bar < {LATENCY_BAR_MS:.0f} ms)",
            p99 < LATENCY_BAR_MS,
        )
    )
    for label, ok in bars:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return bars


async def run(args: argparse.Namespace, settings: Settings, url: str) -> int:
    versions = await broker_versions(args.nats, args.rabbitmq)
    info = conditions(url, versions, settings)
    progress(f"filling {settings.events:,} events")
    fill(url, settings.events)
    messages = await all_messages(url, settings.events)
    progress("relay to NATS vs raw nats-py")
    on_nats = await measure_nats(url, args.nats, messages, settings)
    progress("relay to RabbitMQ vs raw aio-pika")
    on_rabbitmq = await measure_rabbitmq(url, args.rabbitmq, messages, settings)
    progress("relay to an in-memory publisher")
    ceiling = await measure_ceiling(url, settings.events)
    latencies = []
    for wake_interval in WAKE_INTERVALS:
        progress(
            f"latency at {LATENCY_RATE:,.0f} events/s for {settings.latency_seconds} s, "
            f"wake_interval {wake_interval} s"
        )
        latencies.append(await measure_latency(url, args.nats, settings, wake_interval))
    bars = report(info, [on_nats, on_rabbitmq], ceiling, latencies)
    if args.json is not None:
        document = {
            **info,
            "results": [on_nats.as_dict(), on_rabbitmq.as_dict()],
            "in_memory_relay_per_second": ceiling,
            "latency": [latency.as_dict() for latency in latencies],
            "bars": [{"label": label, "ok": ok} for label, ok in bars],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if all(ok for _, ok in bars) else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("EVENTSTORE_DATABASE_URL") or DEFAULT_URL,
        help="admin URL of the Postgres server (a scratch database is made there)",
    )
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--rabbitmq", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--quick", action="store_true", help="fewer events, one round")
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
