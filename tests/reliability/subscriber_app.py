"""The subscription the reliability tests run in real runner processes.

``eventstore subscriptions run tests.reliability.subscriber_app:group`` imports `group`,
which reads its configuration from the environment (so one module serves every test):

- ``RELIABILITY_SHARDS`` (default 4): the subscription's shard count;
- ``RELIABILITY_BATCH_SIZE`` (default 100);
- ``RELIABILITY_HANDLER_DELAY`` (default 0): seconds the handler spends in the database
  per batch (``pg_sleep``, inside the batch transaction, after its insert), so that a kill,
  a stop or an outage lands in a batch that has written and not committed; ``a-b`` draws
  a delay from that range per batch.

The handler records every event it handles into ``handled`` through the batch's own
connection, so the record commits with the checkpoint or not at all. ``handled`` has no
unique constraint on purpose: an event handled twice shows up as two rows, which the tests
count (a unique constraint would turn a double delivery into a dead letter and hide it).
The tests create the table (`HANDLED_TABLE`) before starting any runner.
"""

from __future__ import annotations

import os
import random
from typing import Any, ClassVar, Final

from eventstore import Event, EventRegistry
from eventstore.subscriptions import Batch, Subscription, SubscriptionGroup

NAME: Final = "reliability"

HANDLED_TABLE: Final = """
CREATE TABLE IF NOT EXISTS handled (
    seq bigserial PRIMARY KEY,
    subscription text NOT NULL,
    shard int NOT NULL,
    global_position bigint NOT NULL,
    stream_id text NOT NULL,
    version bigint NOT NULL,
    event_id uuid NOT NULL,
    replay boolean NOT NULL,
    pid int NOT NULL,
    backend_pid int NOT NULL DEFAULT pg_backend_pid(),
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    handled_at timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


class Ticked(Event):
    """One writer's event: who wrote it, in which transaction, its number there."""

    event_type: ClassVar[str] = "reliability.Ticked"
    writer: str
    txn: int
    n: int


def make_registry() -> EventRegistry:
    return EventRegistry([Ticked])


def _delay() -> tuple[float, float]:
    raw = os.environ.get("RELIABILITY_HANDLER_DELAY", "0")
    low, _, high = raw.partition("-")
    return float(low), float(high or low)


_INSERT: Final = (
    "INSERT INTO handled (subscription, shard, global_position, stream_id, version, event_id, "
    "replay, pid) SELECT %s, %s, p, s, v, e, %s, %s FROM unnest("
    "%s::bigint[], %s::text[], %s::bigint[], %s::uuid[]) AS t(p, s, v, e)"
)


def handle(batch: Batch[Any], conn: Any) -> None:
    """Records the batch's events in ``handled``, in the batch's transaction."""
    low, high = _delay()
    with conn.cursor() as cur:
        events = batch.events
        cur.execute(
            _INSERT,
            (
                batch.subscription,
                batch.shard,
                batch.replay,
                os.getpid(),
                [e.global_position for e in events],
                [e.stream_id for e in events],
                [e.version for e in events],
                [e.event_id for e in events],
            ),
        )
        if high > 0:
            # After the insert: the batch has written and not committed while it sleeps.
            cur.execute("SELECT pg_sleep(%s)", (random.uniform(low, high),))


def group() -> SubscriptionGroup:
    """Returns the group, configured from the environment (see the module docstring)."""
    subscription = Subscription(
        NAME,
        handle,
        shards=int(os.environ.get("RELIABILITY_SHARDS", "4")),
        batch_size=int(os.environ.get("RELIABILITY_BATCH_SIZE", "100")),
        on_failure="park",
    )
    return SubscriptionGroup(make_registry(), (subscription,))
