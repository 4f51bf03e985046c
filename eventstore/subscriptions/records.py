"""Values the subscription engine reads and reports: checkpoints, dead letters, status (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any, Literal

from eventstore.events import Event, RecordedEvent
from eventstore.subscriptions.window import PgSnapshot, Window

__all__ = [
    "CheckpointRow",
    "DeadLetter",
    "FencedError",
    "HaltedError",
    "LogPage",
    "PostponedError",
    "RetryOutcome",
    "ShardStatus",
    "StepResult",
    "TransactionInfo",
]

Status = Literal["running", "paused", "halted"]


@dataclasses.dataclass(frozen=True, slots=True)
class LogPage:
    """Holds one page of `read_all`: its events and the token to resume after them."""

    events: tuple[RecordedEvent[Event], ...]
    token: str
    caught_up: bool


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointRow:
    """Holds what a shard's batch cycle needs from its checkpoint row."""

    window: Window
    status: str
    epoch: int
    holds_streams: bool = True  # False: no parked dead letter, so no stream is held
    now: PgSnapshot | None = None  # the current snapshot, read with the checkpoint
    # A live worker's guess, read in the same round trip: the snapshot up to which the
    # window a drained checkpoint at the expected low opens, and that window's first rows.
    live_page: tuple[PgSnapshot, list[Any]] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """Holds an event a subscription could not handle, and why.

    ``reason`` is ``handler_failed``, ``undecodable`` (unknown type, failed upcast, payload
    that no longer validates) or ``held`` (parked behind an earlier dead letter of the same
    stream, so the stream's order is kept).
    """

    id: int
    subscription: str
    shard: int
    global_position: int
    stream_id: str
    version: int
    event_id: uuid.UUID
    event_type: str
    reason: str
    error: str | None
    traceback: str | None
    status: str
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class ShardStatus:
    """Describes one shard of a subscription: who runs it, how far behind it is."""

    name: str
    shard: int
    shards: int
    status: str
    owner: str | None
    lease_until: dt.datetime | None
    epoch: int
    handled: int
    lag_events: int
    oldest_unhandled_at: dt.datetime | None
    window_age: dt.timedelta
    position: int
    last_error: str | None
    updated_at: dt.datetime
    dead_letters: int

    @property
    def lag_seconds(self) -> float:
        """Returns how old the oldest unhandled event is, in seconds (0 when caught up)."""
        if self.oldest_unhandled_at is None:
            return 0.0
        now = dt.datetime.now(self.oldest_unhandled_at.tzinfo)
        return max(0.0, (now - self.oldest_unhandled_at).total_seconds())


@dataclasses.dataclass(frozen=True, slots=True)
class TransactionInfo:
    """Describes the oldest open transaction that has written: it holds windows back."""

    pid: int
    age: dt.timedelta
    transaction_id: int


class FencedError(Exception):
    """Tells a worker that another runner holds its shard now (internal to the engine)."""


class PostponedError(Exception):
    """Carries a transient handler error: the batch rolls back and is retried later."""


class HaltedError(Exception):
    """Carries the handler error that halts a shard under the ``halt`` policy (internal)."""


@dataclasses.dataclass(frozen=True, slots=True)
class StepResult:
    """Reports one cycle: how many events it read, and whether the shard is caught up."""

    read: int
    caught_up: bool
    status: str = "running"


@dataclasses.dataclass(frozen=True, slots=True)
class RetryOutcome:
    """Reports a dead-letter retry: the streams released and the one that failed again."""

    released: tuple[str, ...]
    failed: tuple[str, ...]
    errors: tuple[str, ...]
