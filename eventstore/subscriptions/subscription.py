"""A subscription's definition: its name, handler, filters, shards and failure policy (pure)."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Generic, Literal, TypeVar

from eventstore.errors import ConfigurationError, InvalidArgumentError
from eventstore.events import Event, RecordedEvent
from eventstore.registry import EventRegistry

__all__ = [
    "Batch",
    "ConnectionKind",
    "FailurePolicy",
    "Handler",
    "RetryLater",
    "Start",
    "Subscription",
    "SubscriptionGroup",
]

C = TypeVar("C")
FailurePolicy = Literal["park", "halt"]
"""What a shard does with an event that still fails after its retries (see `Subscription`)."""
# What a handler gets: the psycopg connection, a SQLAlchemy connection, or a session.
ConnectionKind = Literal["psycopg", "sqlalchemy", "session"]
Start = Literal["beginning", "end"]
Handler = Callable[["Batch[Any]", Any], "Awaitable[None] | None"]

# Names appear in logs, the CLI and metrics: keep them plain.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,99}")
MAX_SHARDS: Final = 1024


class RetryLater(Exception):
    """Tells the engine: not now. The whole batch rolls back and is tried again after a backoff.

    Raise it (or an exception listed in `Subscription.transient`) when what the handler
    talks to is unavailable (a broker down, a timeout): nothing is parked, nothing is
    skipped, and the shard's status shows the error until a batch succeeds.
    """


@dataclasses.dataclass(frozen=True, slots=True)
class Batch(Generic[C]):
    """Holds the events a handler gets in one call, in position order, all of one shard.

    ``replay`` is True when the events are handled again on purpose (a rebuild): a handler
    with side effects can tell. A retried dead letter is not a replay: it was never handled.
    """

    subscription: str
    shard: int
    events: tuple[RecordedEvent[Event], ...]
    replay: bool = False

    def __len__(self) -> int:
        return len(self.events)


@dataclasses.dataclass(frozen=True, slots=True)
class Subscription:
    """Defines a named reader of the global log and what it does with each batch.

    The handler is called as ``handler(batch, conn)`` (a coroutine function for the async
    engine, a plain function for the sync one) inside the batch's database transaction:
    whatever it writes through ``conn`` commits together with the checkpoint, or not at all.

    - ``event_types``: only these types (classes or stored names); others are skipped in
      SQL and still advance the checkpoint.
    - ``stream_prefix``: only streams whose id starts with it (e.g. ``"account-"``).
    - ``shards``: events are split by ``shard_key % shards``, so several runners share the
      work; one stream's events always land in the same shard, in order. Fixed once the
      subscription has run (see `ShardCountChangedError`).
    - ``on_failure``: after ``retries`` attempts, ``"park"`` records the failing event as a
      dead letter and holds its stream (its later events park behind it, in order) while
      every other stream moves on; ``"halt"`` stops the shard.
    - ``start``: where a new subscription begins: the beginning of the log, or its end.
    - ``transient``: exception classes that mean "unavailable, try later" (like
      `RetryLater`): the batch rolls back and is retried after a backoff, forever, and
      nothing is parked.
    - ``connection``: what the handler gets: the batch's psycopg connection (default), or,
      through the SQLAlchemy engine given to the runner, a SQLAlchemy ``Connection`` /
      ``AsyncConnection`` or a ``Session`` / ``AsyncSession`` in the same transaction.
    - ``side_effects``: whether the handler does work outside the batch's transaction
      (publishes, calls a service). By default a batch calls its handler once with no
      savepoint, and when that call fails the batch rolls back and runs again with each
      call in a savepoint, where retries and narrowing down to the failing event happen:
      two round trips fewer per batch, and a rolled-back first call leaves nothing behind.
      A handler with side effects would repeat the first call's work in the rerun; with
      ``side_effects=True`` every call runs in a savepoint from the start instead, in one
      transaction, so a handler can remember what it already did (the outbox relay does).
    """

    name: str
    handler: Handler
    batch_size: int = 500
    event_types: Sequence[str | type[Event]] | None = None
    stream_prefix: str | None = None
    shards: int = 1
    on_failure: FailurePolicy = "park"
    retries: int = 3
    start: Start = "beginning"
    connection: ConnectionKind = "psycopg"
    transient: tuple[type[BaseException], ...] = ()
    side_effects: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise InvalidArgumentError(
                f"subscription name {self.name!r}: use 1-100 letters, digits, '_', '.', ':' "
                "or '-', starting with a letter or digit"
            )
        if not callable(self.handler):
            raise ConfigurationError(f"subscription {self.name!r}: handler is not callable")
        self._check_numbers()
        if self.on_failure not in ("park", "halt"):
            raise ConfigurationError(
                f"on_failure must be 'park' or 'halt', not {self.on_failure!r}"
            )
        if self.connection not in ("psycopg", "sqlalchemy", "session"):
            raise ConfigurationError(
                f"connection must be 'psycopg', 'sqlalchemy' or 'session', not {self.connection!r}"
            )
        if self.start not in ("beginning", "end"):
            raise ConfigurationError(f"start must be 'beginning' or 'end', not {self.start!r}")
        if self.event_types is not None:
            object.__setattr__(self, "event_types", _type_names(self.event_types))
        if self.stream_prefix is not None and not isinstance(self.stream_prefix, str):
            raise ConfigurationError("stream_prefix must be a str")

    def is_transient(self, error: BaseException) -> bool:
        """Tells whether a handler error means "try the batch again later"."""
        return isinstance(error, (RetryLater, *self.transient))

    @property
    def type_names(self) -> tuple[str, ...] | None:
        """Returns the stored type names the subscription reads, or None for all."""
        return None if self.event_types is None else _type_names(self.event_types)

    def _check_numbers(self) -> None:
        for field, value, low, high in (
            ("batch_size", self.batch_size, 1, 100_000),
            ("shards", self.shards, 1, MAX_SHARDS),
            ("retries", self.retries, 1, 100),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(
                    f"subscription {self.name!r}: {field} must be an int from {low} to {high}"
                )

    @property
    def is_async(self) -> bool:
        """Tells whether the handler is a coroutine function (run by the async engine)."""
        return inspect.iscoroutinefunction(self.handler) or inspect.iscoroutinefunction(
            getattr(self.handler, "__call__", None)  # noqa: B004 - callable objects
        )

    def shard_of(self, shard_key: int) -> int:
        """Returns the shard that reads events with this shard key."""
        return shard_key % self.shards


def _type_names(types: Iterable[str | type[Event]] | str | type[Event]) -> tuple[str, ...]:
    if isinstance(types, str | type):
        types = (types,)
    names = []
    for item in types:
        if isinstance(item, str) and item:
            names.append(item)
        elif isinstance(item, type) and issubclass(item, Event) and "event_type" in vars(item):
            names.append(item.event_type)
        else:
            raise ConfigurationError(f"event_types: {item!r} is not an Event class or a type name")
    return tuple(names)


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionGroup:
    """Bundles the subscriptions one runner process runs with the registry that decodes events.

    ``eventstore subscriptions run module:name`` imports such an object (or a function
    returning one) and runs it.
    """

    registry: EventRegistry
    subscriptions: tuple[Subscription, ...]

    def __post_init__(self) -> None:
        subs = tuple(self.subscriptions)
        names = [s.name for s in subs]
        if not subs:
            raise ConfigurationError("a subscription group needs at least one subscription")
        if len(set(names)) != len(names):
            raise ConfigurationError(f"subscription names must be unique: {names}")
        object.__setattr__(self, "subscriptions", subs)

    def get(self, name: str) -> Subscription:
        """Returns the subscription of that name."""
        for sub in self.subscriptions:
            if sub.name == name:
                return sub
        raise ConfigurationError(f"no subscription named {name!r} in this group")
