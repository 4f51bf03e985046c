"""Relays survive crashes and outages: every committed event arrives, each stream in order.

The relays are real `eventstore relay run` processes publishing to RabbitMQ, NATS
JetStream, Redis Streams and a webhook at once (one process runs the four relays, so a
kill tests them all); the writers are the subscription reliability tests' writer
processes, whose outcome logs say which events were committed. What arrived is read back
from each broker and checked against the log: every committed event arrived at least
once, nothing else did, and after dropping duplicates by event id each stream's
messages are in version order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eventstore.cli import main as eventstore_main
from eventstore.subscriptions import SubscriptionStore
from outbox import Message
from tests.outbox.brokers import (
    Server,
    WebhookReceiver,
    nats_messages,
    nats_stream,
    rabbitmq_messages,
    rabbitmq_queue,
    rabbitmq_remove,
    rabbitmqctl,
    redis_messages,
    unique,
)
from tests.outbox.relay_app import RELAYS
from tests.reliability.harness import (
    EVENTSTORE_COMMAND,
    ROOT,
    Outcomes,
    Process,
    finish,
    rows,
    runner_sessions,
    scalar,
    start_writer,
    stop_all,
    wait_for,
    with_application_name,
)
from tests.reliability.subscriber_app import make_registry

pytestmark = pytest.mark.slow

KILLS = 20
BATCH_SIZE = 20
SHARDS = 2


@dataclasses.dataclass
class Deployment:
    """Where the relays publish, for one test, and how to read back what arrived."""

    exchange: str
    queue: str
    nats: Server
    nats_stream: str
    redis: Server
    redis_key: str
    webhook: WebhookReceiver
    rabbitmq_arrived: list[Message] = dataclasses.field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats.port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis.port}/0"

    def env(self, **more: str) -> dict[str, str]:
        return {
            "OUTBOX_RABBITMQ_EXCHANGE": self.exchange,
            "OUTBOX_NATS_URL": self.nats_url,
            "OUTBOX_NATS_SUBJECT": self.nats_stream,
            "OUTBOX_REDIS_URL": self.redis_url,
            "OUTBOX_REDIS_KEY": self.redis_key,
            "OUTBOX_WEBHOOK_URL": self.webhook.url,
            "OUTBOX_BATCH_SIZE": str(BATCH_SIZE),
            "OUTBOX_SHARDS": str(SHARDS),
            **more,
        }

    def received(self) -> dict[str, list[Message]]:
        """Returns what each broker holds (RabbitMQ's queue is drained into a list)."""
        self.rabbitmq_arrived += asyncio.run(rabbitmq_messages(self.queue))
        return {
            "rabbitmq": list(self.rabbitmq_arrived),
            "nats": asyncio.run(nats_messages(self.nats_url, self.nats_stream)),
            "redis": redis_messages(self.redis_url, self.redis_key),
            "webhook": self.webhook.messages(),
        }


@pytest.fixture
def deployment(
    rabbitmq: None, nats: Server, redis: Server, webhook: WebhookReceiver
) -> Iterator[Deployment]:
    exchange, queue = unique("outbox-reliability"), unique("outbox-reliability")
    stream = unique("RELIABILITY")
    asyncio.run(rabbitmq_queue(exchange, queue, "#"))
    nats_url = f"nats://127.0.0.1:{nats.port}"
    asyncio.run(nats_stream(nats_url, stream, [f"{stream}.>"]))
    try:
        yield Deployment(exchange, queue, nats, stream, redis, unique("reliability"), webhook)
    finally:
        asyncio.run(rabbitmq_remove(exchange, queue))


def start_relay(url: str, log_dir: Path, runner_id: str, env: dict[str, str]) -> Process:
    """Starts ``eventstore relay run`` on the test relays, as its own process."""
    log = log_dir / f"relay-{runner_id}.log"
    command = [
        *EVENTSTORE_COMMAND, "relay", "run", "tests.outbox.relay_app:group",
        "--url", with_application_name(url, f"runner-{runner_id}"),
        "--lease-ttl", "1", "--poll-interval", "0.2", "--runner-id", runner_id,
    ]  # fmt: skip
    with open(log, "a") as out:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            text=True,
        )
    return Process(popen, log, f"relay {runner_id}")


def relay_status(url: str) -> dict[str, list[Any]]:
    with SubscriptionStore(url, registry=make_registry(), max_size=1) as store:
        shards = [s for s in store.status() if s.name.startswith("relay:")]
    found: dict[str, list[Any]] = {}
    for shard in shards:
        found.setdefault(shard.name.removeprefix("relay:"), []).append(shard)
    return found


def describe(url: str) -> str:
    return "\n".join(
        f"{name} shard {s.shard}: {s.status} owner={s.owner} handled={s.handled} "
        f"lag={s.lag_events} dead={s.dead_letters} error={s.last_error}"
        for name, shards in relay_status(url).items()
        for s in shards
    )


def handled(url: str) -> int:
    where = "name LIKE 'relay:%%'"
    return int(
        scalar(url, f"SELECT coalesce(sum(handled), 0) FROM eventstore.checkpoints WHERE {where}")
    )


def wait_until_relays_caught_up(url: str, timeout: float) -> None:
    with SubscriptionStore(url, registry=make_registry(), max_size=1) as store:
        for name in RELAYS:
            store.wait_until_caught_up(f"relay:{name}", timeout=timeout, poll_interval=0.05)


def stored_events(url: str) -> dict[uuid.UUID, tuple[str, int]]:
    return {
        event_id: (stream, version)
        for event_id, stream, version in rows(
            url, "SELECT event_id, stream_id, version FROM eventstore.events"
        )
    }


def check_delivery(
    broker: str,
    messages: list[Message],
    committed: set[uuid.UUID],
    stored: dict[uuid.UUID, tuple[str, int]],
    most_duplicates: int,
) -> str:
    """Checks one broker's messages against the log; returns a summary line."""
    ids = [uuid.UUID(m.id) for m in messages]
    arrived = set(ids)
    missing = committed - arrived
    assert not missing, f"{broker}: {len(missing)} committed events never arrived"
    assert arrived <= stored.keys(), f"{broker}: messages of events that are not in the log"
    assert arrived == stored.keys(), f"{broker}: {len(stored.keys() - arrived)} stored missing"
    wrong = [m for m in messages if stored[uuid.UUID(m.id)] != (m.stream_id, m.stream_version)]
    assert not wrong, f"{broker}: messages with other coordinates than their event: {wrong[:3]}"
    seen: set[str] = set()
    streams: dict[str, list[int]] = {}
    for message in messages:
        if message.id not in seen:
            seen.add(message.id)
            streams.setdefault(message.stream_id, []).append(message.stream_version)
    expected: dict[str, list[int]] = {}
    for stream, version in sorted(stored.values()):
        expected.setdefault(stream, []).append(version)
    disordered = [s for s, versions in streams.items() if versions != expected[s]]
    assert not disordered, (
        f"{broker}: {len(disordered)} streams out of version order, e.g. "
        f"{disordered[0]}: {streams[disordered[0]]}"
    )
    duplicates = len(ids) - len(arrived)
    assert duplicates <= most_duplicates, (
        f"{broker}: {duplicates} duplicates, more than in flight ({most_duplicates}): "
        f"{Counter(ids).most_common(3)}"
    )
    return f"{broker}: {len(ids)} messages, {duplicates} duplicates"


def check_every_broker(
    deployment: Deployment, url: str, log_dir: Path, kills: int, batch_size: int = BATCH_SIZE
) -> str:
    outcomes = Outcomes.read(log_dir)
    stored = stored_events(url)
    assert outcomes.committed <= stored.keys()
    assert not dead_letters(url), dead_letters(url)
    # A kill re-sends at most the batches the killed process had in flight: one per shard.
    in_flight = max(kills, 1) * SHARDS * batch_size
    bounds = {"rabbitmq": in_flight, "nats": 0, "redis": in_flight, "webhook": in_flight}
    summary = [
        check_delivery(broker, messages, outcomes.committed, stored, bounds[broker])
        for broker, messages in deployment.received().items()
    ]
    return f"{len(stored)} events; " + "; ".join(summary)


def dead_letters(url: str) -> list[tuple[Any, ...]]:
    return rows(url, "SELECT name, stream_id, error FROM eventstore.dead_letters LIMIT 5")


def kill_point(url: str, mode: str, runner_id: str, progress: int) -> Callable[[], object]:
    """Returns the condition to kill a relay on: where in its life the kill lands."""
    if mode == "connected":  # anywhere in its start
        return lambda: runner_sessions(url, runner_id)
    if mode == "holding":  # it holds a shard
        return lambda: scalar(
            url, "SELECT count(*) FROM eventstore.checkpoints WHERE owner = %s", (runner_id,)
        )
    if mode == "publishing":  # a batch transaction is open while its handler publishes
        return lambda: runner_sessions(url, runner_id, "state = 'idle in transaction'")
    return lambda: handled(url) >= progress  # after some batches committed


def test_relays_killed_at_random_points_deliver_every_committed_event_in_stream_order(
    deployment: Deployment, eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    env = deployment.env(OUTBOX_PUBLISH_DELAY="0-0.02")
    stop_writers = tmp_path / "stop-writers"
    writers = [
        start_writer(url, tmp_path, f"w{n}", seed=n, until=stop_writers, delay=0.3)
        for n in range(2)
    ]
    slots = {slot: start_relay(url, tmp_path, f"{slot}0", env) for slot in "ab"}
    ids = {slot: f"{slot}0" for slot in "ab"}
    spent: list[Process] = []
    kills: Counter[str] = Counter()
    try:
        for cycle in range(1, KILLS + 1):
            slot = rng.choice("ab")
            victim, runner_id = slots[slot], ids[slot]
            mode = rng.choice(("connected", "holding", "publishing", "progress"))
            condition = kill_point(url, mode, runner_id, handled(url) + rng.randint(1, 60))
            wait_for(
                condition,
                30,
                f"kill {cycle} ({mode}) of relay {runner_id} (seed {seed})",
                interval=0.02,
                diagnose=lambda: f"{describe(url)}\n{victim.tail()}",  # noqa: B023
            )
            victim.kill()
            assert victim.popen.returncode == -signal.SIGKILL, victim.tail()
            kills[mode] += 1
            spent.append(victim)
            ids[slot] = f"{slot}{cycle}"
            slots[slot] = start_relay(url, tmp_path, ids[slot], env)

        stop_writers.touch()
        finish(writers, 60)
        wait_until_relays_caught_up(url, 90)
        # The last relay started may still be importing, before its SIGTERM handler: it
        # has one once it has a session (it installs the handler before connecting).
        for slot, relay in slots.items():
            wait_for(
                lambda: runner_sessions(url, ids[slot]),  # noqa: B023
                30,
                f"relay {ids[slot]} connects",
                diagnose=relay.tail,
            )
        for relay in slots.values():
            relay.signal(signal.SIGTERM)
        finish(slots.values(), 30)
        summary = check_every_broker(deployment, url, tmp_path, KILLS)
        assert kills["publishing"] >= 1 or sum(kills.values()) == KILLS
        print(f"seed {seed}: kills {dict(kills)}; {summary}")
    finally:
        stop_writers.touch()
        stop_all([*writers, *slots.values(), *spent])


def all_relays_show_an_error(url: str) -> dict[str, str] | None:
    errors = {
        name: next((s.last_error for s in shards if s.last_error), None)
        for name, shards in relay_status(url).items()
    }
    return errors if len(errors) == len(RELAYS) and all(errors.values()) else None  # type: ignore[return-value]


def test_brokers_down_for_ten_seconds_under_load_postpone_delivery_and_lose_nothing(
    deployment: Deployment,
    eventstore_database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = eventstore_database_url
    stop_writers = tmp_path / "stop-writers"
    writers = [
        start_writer(url, tmp_path, f"w{n}", seed=n, until=stop_writers, delay=0.3)
        for n in range(2)
    ]
    relay = start_relay(url, tmp_path, "r", deployment.env(OUTBOX_BATCH_SIZE="100"))
    try:
        outage(deployment, url, relay, capsys)
        stop_writers.touch()
        finish(writers, 60)
        wait_until_relays_caught_up(url, 90)
        assert not any(s.last_error for shards in relay_status(url).values() for s in shards)
        relay.signal(signal.SIGTERM)
        finish([relay], 30)
        print(check_every_broker(deployment, url, tmp_path, kills=0, batch_size=100))
    finally:
        stop_writers.touch()
        stop_all([*writers, relay])


def outage(
    deployment: Deployment, url: str, relay: Process, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stops every broker for ten seconds, checking that the relays show it and wait."""
    down = False
    try:
        wait_for(
            lambda: (
                all(sum(s.handled for s in shards) for shards in relay_status(url).values())
                and len(relay_status(url)) == len(RELAYS)
            ),
            30,
            "every relay publishes",
            diagnose=lambda: f"{describe(url)}\n{relay.tail()}",
        )
        rabbitmqctl("stop_app")
        down = True
        deployment.nats.stop()
        deployment.redis.stop()
        deployment.webhook.respond = lambda body: 503
        went_down = time.monotonic()
        errors = wait_for(
            lambda: all_relays_show_an_error(url),
            30,
            "every relay's status shows its broker's outage",
            diagnose=lambda: f"{describe(url)}\n{relay.tail()}",
        )
        assert eventstore_main(["relay", "status", "--url", url]) == 0
        shown = capsys.readouterr().out
        for name in RELAYS:
            assert f"relay:{name} shard" in shown, shown
        assert "HTTP 503" in errors["webhook"], errors
        published_while_down = handled(url)
        # The outage lasts ten seconds while the writers go on; the relays keep failing.
        wait_for(
            lambda: time.monotonic() - went_down >= 10 and all_relays_show_an_error(url),
            30,
            "ten seconds of outage",
        )
        assert handled(url) == published_while_down, "a relay moved on while its broker was down"
        assert relay.alive(), relay.tail()
        assert not dead_letters(url), "an outage parked events"
    finally:
        if down:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
            deployment.nats.start()
            deployment.redis.start()
            deployment.webhook.respond = lambda body: 200
