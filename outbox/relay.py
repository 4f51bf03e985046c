"""The relay: a subscription that publishes committed events to a broker, at least once, in order.

The events a service appends in its own transaction are the outbox. A `Relay` is a
`Subscription` named ``relay:<name>`` whose handler maps a batch of events to messages,
publishes them and waits for the broker's confirmation of every one; only then does the
handler return, and the engine commits the checkpoint. A crash between the confirmation
and the commit means the batch is read and published again: delivery is at least once,
and the message id (the event id) is the key to drop duplicates by.

Order. Within a batch, a stream's messages are published one after the other, each
only once the previous one is confirmed; different streams' messages go out together,
up to ``max_in_flight`` unconfirmed at any time, in publisher calls of a quarter of that
(`publish_in_order`: a sliding window, so the broker always has work while earlier
calls wait for their confirmations). A later event of a stream is therefore never sent
before an earlier one is confirmed, and the engine never gives another batch of the
shard (or another runner) the stream's next events before this batch committed.

Failures. A `TransientPublishError` (broker down, a timeout) is in the subscription's
``transient`` classes: the batch rolls back and is retried with backoff, nothing is
skipped, and the shard's status shows the error. A `PermanentPublishError` (the broker
refused that message for good) is an ordinary handler failure: the engine retries, then
narrows the batch down to that one event (it handles halves of the batch in savepoints),
parks it as a dead letter naming the cause, and holds its stream (later events of the
stream are parked behind it, in order) while every other stream keeps flowing. Retrying
the dead letters publishes the held events, in order, and releases the stream.

Tracing. With OpenTelemetry, each message is published in a span of its own, the child
of the appending request's span, and carries that span's ``traceparent`` (see
`outbox.tracing`).

Narrowing down calls the handler again on parts of the batch, in the same transaction.
The handler remembers which messages the broker confirmed in that transaction and does
not send them again (see `_RelayHandler`): the refused message is retried, not the batch.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Final

from eventstore.errors import ConfigurationError
from eventstore.events import Event, RecordedEvent
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.registry import EventRegistry
from eventstore.subscriptions import (
    AsyncSubscriptionStore,
    Batch,
    RetryOutcome,
    Subscription,
    SubscriptionGroup,
)
from eventstore.subscriptions.engine_async import retry_dead_letters
from eventstore.subscriptions.runner import SubscriptionRunner
from eventstore.subscriptions.subscription import Start
from outbox.enqueue import OutboxMessage
from outbox.errors import PermanentPublishError, TransientPublishError
from outbox.message import Mapper, Message, message_from_event
from outbox.publisher import Publisher
from outbox.tracing import publishing

__all__ = ["RELAY_PREFIX", "Relay", "RelayGroup", "publish_in_order"]

logger = logging.getLogger("outbox.relay")

RELAY_PREFIX: Final = "relay:"
# The batch transaction's start time: it names the transaction (see _RelayHandler).
TRANSACTION_STARTED: Final = "SELECT now()"


class Relay:
    """Defines one relay: which events leave the service, as what, through which publisher.

    - ``source``: the CloudEvents ``source`` of every message (a URI reference naming the
      service, e.g. ``"//bank.example.com/accounts"``).
    - ``event_types``: only these event types leave (filtered in SQL); ``stream_prefixes``:
      only events of streams starting with one of these (``"account-"``).
    - ``mapper(event, message)``: returns the message to send (``message`` itself, or a
      `Message.replace` of it with a public type and data) or None to keep the event in.
    - ``enqueued``: also deliver the `OutboxMessage` s enqueued with `enqueue` (those
      whose ``destination`` is None or this relay's name), whatever the filters above.
    - ``batch_size``, ``shards``, ``retries``, ``start``: the subscription's (see
      `Subscription`); several relay processes share the shards, each stream in one. A
      batch is one database transaction that commits the checkpoint once the broker has
      confirmed all of it: large batches spread that transaction's cost over more
      messages, and a crash sends at most one batch again.
    - ``max_in_flight``: most messages sent and not yet confirmed at any time (a
      stream's messages are never in flight together).
    - ``publish_timeout``: seconds to wait for the broker's confirmation of a call;
      beyond it the batch is postponed as if the broker were down.
    """

    def __init__(
        self,
        name: str,
        publisher: Publisher,
        *,
        source: str,
        event_types: Sequence[str | type[Event]] | None = None,
        stream_prefixes: Sequence[str] | None = None,
        mapper: Mapper | None = None,
        enqueued: bool = True,
        batch_size: int = 1000,
        shards: int = 1,
        retries: int = 3,
        start: Start = "beginning",
        publish_timeout: float = 30.0,
        max_in_flight: int = 100,
    ) -> None:
        if not isinstance(publisher, Publisher):
            raise ConfigurationError(f"relay {name!r}: {publisher!r} is not a Publisher")
        if not source:
            raise ConfigurationError(f"relay {name!r}: source must be a non-empty URI reference")
        if isinstance(stream_prefixes, str):
            stream_prefixes = (stream_prefixes,)
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int):
            raise ConfigurationError(f"relay {name!r}: max_in_flight must be an int >= 1")
        if max_in_flight < 1:
            raise ConfigurationError(f"relay {name!r}: max_in_flight must be an int >= 1")
        self.name = name
        self.max_in_flight = max_in_flight
        self.publisher = publisher
        self.source = source
        self.mapper = mapper
        self.enqueued = enqueued
        self.stream_prefixes = None if stream_prefixes is None else tuple(stream_prefixes)
        self.publish_timeout = publish_timeout
        types = None if event_types is None else list(event_types)
        if types is not None and enqueued:
            types.append(OutboxMessage.event_type)
        # One prefix and no enqueued messages (which live in outbox-* streams) is pushed
        # into SQL; anything else is filtered here, and still moves the checkpoint.
        sql_prefix = None
        if self.stream_prefixes is not None and len(self.stream_prefixes) == 1 and not enqueued:
            sql_prefix = self.stream_prefixes[0]
        self.subscription = Subscription(
            RELAY_PREFIX + name,
            _RelayHandler(self),
            batch_size=batch_size,
            event_types=types,
            stream_prefix=sql_prefix,
            shards=shards,
            on_failure="park",
            retries=retries,
            start=start,
            transient=(TransientPublishError,),
            side_effects=True,  # a rerun of a rolled-back batch would publish it all again
        )

    def __repr__(self) -> str:
        return f"Relay({self.name!r}, {type(self.publisher).__name__})"

    def messages(self, events: Iterable[RecordedEvent[Event]]) -> list[Message]:
        """Returns the messages these events become, in order; filtered-out ones are left out."""
        return list(self.iter_messages(events))

    def iter_messages(self, events: Iterable[RecordedEvent[Event]]) -> Iterator[Message]:
        """Yields the messages these events become, one at a time (see `messages`)."""
        for event in events:
            if not self._wanted(event):
                continue
            message = message_from_event(event, self.source)
            if self.mapper is not None:
                mapped = self.mapper(event, message)
                if mapped is None:
                    continue
                message = mapped
            yield message

    def _wanted(self, event: RecordedEvent[Event]) -> bool:
        if isinstance(event.data, OutboxMessage):
            destination = event.data.destination
            return self.enqueued and destination in (None, self.name)
        if self.stream_prefixes is None:
            return True
        return event.stream_id.startswith(self.stream_prefixes)

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publishes one call's messages, waiting at most ``publish_timeout`` for the broker.

        With OpenTelemetry, each message gets a publish span (see `outbox.tracing`).
        """
        system = getattr(self.publisher, "system", type(self.publisher).__name__)
        with publishing(messages, relay=self.name, system=system) as sent:
            try:
                async with asyncio.timeout(self.publish_timeout):
                    await self.publisher.publish(sent)
            except TimeoutError as exc:
                raise TransientPublishError(
                    f"no confirmation from the broker within {self.publish_timeout} s"
                ) from exc


class _RelayHandler:
    """Publishes a batch, each stream in order, and returns once the broker confirmed all of it.

    It remembers, per shard, the messages the broker confirmed in the current batch
    transaction: the engine's retries and its narrowing down of a failing batch call the
    handler again in that same transaction, and those messages are not sent again. A new
    transaction (the next batch, a batch postponed and read again, a subscription reset)
    starts afresh, so the memory never hides a message that is to be published again.
    """

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._confirmed: dict[int, tuple[tuple[int, object], set[str]]] = {}

    async def __call__(self, batch: Batch[Any], conn: Any) -> None:
        # A replay (events handled again on purpose) always publishes everything.
        confirmed = set() if batch.replay else await self._confirmed_in(batch.shard, conn)
        already = frozenset(confirmed)
        await publish_in_order(
            (m for m in self._relay.iter_messages(batch.events) if m.id not in already),
            self._relay.publish,
            self._relay.max_in_flight,
            confirmed,
        )

    async def _confirmed_in(self, shard: int, conn: Any) -> set[str]:
        """Returns the ids the broker confirmed so far in this batch transaction."""
        # now() is the transaction's start time: with the backend's pid, it names the
        # transaction across the savepoints the engine runs each call in.
        cursor = await conn.execute(TRANSACTION_STARTED)
        (started,) = await cursor.fetchone()
        transaction = (conn.info.backend_pid, started)
        known = self._confirmed.get(shard)
        if known is None or known[0] != transaction:
            known = self._confirmed[shard] = (transaction, set())
        return known[1]


async def publish_in_order(
    messages: Iterable[Message],
    publish: Callable[[Sequence[Message]], Awaitable[None]],
    max_in_flight: int,
    confirmed: set[str],
) -> None:
    """Publishes messages with at most ``max_in_flight`` unconfirmed, each stream in order.

    A stream's next message is sent only once its previous one is confirmed; messages of
    different streams go out concurrently, in calls of up to a quarter of
    ``max_in_flight`` (a sliding window: a call that returns frees room for the next at
    once). ``messages`` is consumed as room frees up, so the work of making a message
    (a generator's) overlaps with the broker's work on the ones sent. The ids of confirmed
    calls are added to ``confirmed`` as they return. When a call raises, no new call
    starts; the calls under way are awaited (what they confirm is kept) and the first
    error is raised, a refusal (`PermanentPublishError`) before an outage; an error of
    ``messages`` itself is handled the same way.
    """
    source = iter(messages)
    more = True
    pending: dict[str, collections.deque[Message]] = {}  # per stream, not sent yet
    busy: set[str] = set()  # streams with a message under way
    ready: collections.deque[str] = collections.deque()  # streams whose next may go now
    chunk = max(1, -(-max_in_flight // 4))
    running: dict[asyncio.Future[None], list[Message]] = {}
    room = max_in_flight
    failures: list[BaseException] = []

    def pull(wanted: int) -> None:
        """Takes messages from the source until ``wanted`` streams are ready, or it ends."""
        nonlocal more
        while more and len(ready) < wanted:
            message = next(source, None)
            if message is None:
                more = False
                return
            queue = pending.get(message.stream_id)
            if queue is None:
                queue = pending[message.stream_id] = collections.deque()
            if not queue and message.stream_id not in busy:
                ready.append(message.stream_id)
            queue.append(message)

    try:
        while True:
            while room and not failures:
                try:
                    pull(min(room, chunk))
                except Exception as exc:  # a mapper raised: what is under way still counts
                    failures.append(exc)
                    break
                if not ready:
                    break
                call = []
                for _ in range(min(chunk, room, len(ready))):
                    stream = ready.popleft()
                    call.append(pending[stream].popleft())
                    busy.add(stream)
                running[asyncio.ensure_future(publish(call))] = call
                room -= len(call)
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                sent = running.pop(task)
                room += len(sent)
                for message in sent:
                    busy.discard(message.stream_id)
                    if pending[message.stream_id]:
                        ready.append(message.stream_id)
                error = task.exception()
                if error is not None:
                    failures.append(error)
                else:
                    confirmed.update(m.id for m in sent)
    finally:
        for task in running:  # cancelled from outside (a stop, a timeout)
            task.cancel()
    if failures:
        refusals = [f for f in failures if isinstance(f, PermanentPublishError)]
        raise (refusals or failures)[0]


@dataclasses.dataclass(frozen=True, slots=True)
class RelayGroup:
    """Bundles the relays one process runs with the registry that decodes their events.

    ``eventstore relay run module:name`` imports such an object (or a function returning
    one) and runs it. The registry learns `OutboxMessage`, for enqueued messages.
    """

    registry: EventRegistry
    relays: tuple[Relay, ...]

    def __post_init__(self) -> None:
        relays = tuple(self.relays)
        names = [r.name for r in relays]
        if not relays:
            raise ConfigurationError("a relay group needs at least one relay")
        if len(set(names)) != len(names):
            raise ConfigurationError(f"relay names must be unique: {names}")
        object.__setattr__(self, "relays", relays)
        if OutboxMessage.event_type not in self.registry:
            self.registry.register(OutboxMessage)

    @property
    def subscriptions(self) -> tuple[Subscription, ...]:
        """Returns the relays' subscriptions."""
        return tuple(r.subscription for r in self.relays)

    def subscription_group(self) -> SubscriptionGroup:
        """Returns the relays as a `SubscriptionGroup` (for the ``subscriptions`` commands)."""
        return SubscriptionGroup(self.registry, self.subscriptions)

    def get(self, name: str) -> Relay:
        """Returns the relay of that name (``orders`` or its subscription's ``relay:orders``)."""
        for relay in self.relays:
            if name in (relay.name, relay.subscription.name):
                return relay
        raise ConfigurationError(f"no relay named {name!r} in this group")

    async def close(self) -> None:
        """Closes every relay's publisher."""
        for publisher in {id(r.publisher): r.publisher for r in self.relays}.values():
            try:
                await publisher.close()
            except Exception:
                logger.exception("closing a publisher failed")

    async def run(
        self, stop: asyncio.Event | None = None, *, url: str | None = None, **options: Any
    ) -> None:
        """Runs the relays until ``stop`` is set, then stops gracefully and closes publishers.

        ``options`` go to `SubscriptionRunner` (``schema``, ``lease_ttl``, ...).
        """
        runner = SubscriptionRunner(self.subscriptions, registry=self.registry, url=url, **options)
        try:
            await runner.run(stop)
        finally:
            await self.close()

    async def retry_dead_letters(
        self,
        name: str,
        *,
        url: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        stream_id: str | None = None,
    ) -> RetryOutcome:
        """Publishes a relay's held streams (or one) again, in order, releasing those sent."""
        relay = self.get(name)
        async with AsyncSubscriptionStore(url, registry=self.registry, schema=schema) as store:
            return await retry_dead_letters(store, relay.subscription, stream_id)
