"""Aggregates: state rebuilt from events, commands that record new ones.

An aggregate is a pydantic model whose fields are its state (so a snapshot is its JSON),
with one typed handler per event class::

    class Account(Aggregate):
        category: ClassVar[str] = "account"
        balance: int = 0

        @applies
        def _deposited(self, event: Deposited) -> None:
            self.balance += event.amount

        def deposit(self, amount: int) -> None:
            if amount <= 0:
                raise ValueError("amount must be positive")
            self.record(Deposited(amount=amount))

mypy checks each handler's body against its event class. The functional style
(`decide`/`evolve`) is in `eventstore.aggregates.decider`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar, overload
from uuid import UUID

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from eventstore._append import validate_stream_id
from eventstore.errors import AggregateError
from eventstore.events import Event
from eventstore.store import Snapshot

__all__ = [
    "Aggregate",
    "applies",
]

A = TypeVar("A", bound="Aggregate")
E = TypeVar("E", bound=Event)
Handler = Callable[[Any, Any], None]


@overload
def applies(fn: Callable[[A, E], None], /) -> Callable[[A, E], None]: ...


@overload
def applies(
    event_class: type[Event], /
) -> Callable[[Callable[[A, E], None]], Callable[[A, E], None]]: ...


def applies(target: Any, /) -> Any:
    """Marks a method as the handler of one event class (read from its annotation or given).

    ``@applies`` reads the class from the event parameter's annotation; ``@applies(Cls)``
    names it explicitly (needed for event classes defined inside functions).
    """
    if isinstance(target, type):

        def mark(fn: Callable[[A, E], None]) -> Callable[[A, E], None]:
            fn.__eventstore_applies__ = target  # type: ignore[attr-defined]
            return fn

        return mark
    target.__eventstore_applies__ = None
    return target


def _event_class_of(fn: Callable[..., None]) -> type[Event]:
    explicit = getattr(fn, "__eventstore_applies__", None)
    if explicit is not None:
        return typing.cast(type[Event], explicit)
    params = list(inspect.signature(fn).parameters)
    if len(params) != 2:
        raise TypeError(f"@applies handler {fn.__qualname__} must take (self, event)")
    try:
        hint = typing.get_type_hints(fn).get(params[1])
    except NameError as exc:
        raise TypeError(
            f"@applies handler {fn.__qualname__}: cannot resolve its annotation ({exc}); "
            "use @applies(EventClass) for classes defined inside functions"
        ) from exc
    if not (isinstance(hint, type) and issubclass(hint, Event)):
        raise TypeError(
            f"@applies handler {fn.__qualname__}: annotate the event parameter with an "
            "Event class, or use @applies(EventClass)"
        )
    return hint


def _marked_handlers(klass: type) -> dict[type[Event], str]:
    """Returns one class's own ``@applies`` methods by event class; two for one is an error."""
    found: dict[type[Event], str] = {}
    for name, value in vars(klass).items():
        if callable(value) and hasattr(value, "__eventstore_applies__"):
            event = _event_class_of(value)
            if event in found:
                raise TypeError(
                    f"{klass.__qualname__} has two @applies handlers for {event.__qualname__}: "
                    f"{found[event]} and {name}"
                )
            found[event] = name
    return found


class Aggregate(BaseModel):
    """Holds one consistency boundary: state from its events, new events from commands.

    Subclasses declare ``category`` (the stream id is ``"{category}-{id}"``) and, when their
    fields change shape, bump ``snapshot_version`` so that older snapshots are ignored; they
    may override `blank` for the state before the first event. Besides pydantic's own,
    the class adds only `record`, `stream_id`, `version`, `pending_events`, `from_events`
    and `blank` to a subclass's namespace: what loaders need is in this module's functions.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    category: ClassVar[str]
    snapshot_version: ClassVar[int] = 1
    __handlers__: ClassVar[dict[type[Event], Handler]] = {}

    id: str
    _version: int = PrivateAttr(default=0)
    _pending: list[Event] = PrivateAttr(default_factory=list)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        names: dict[type[Event], str] = {}
        for klass in reversed(cls.__mro__):
            names.update(_marked_handlers(klass))
        # Resolve by name on this class, so that a plain override in a subclass wins.
        cls.__handlers__ = {event: getattr(cls, name) for event, name in names.items()}

    @property
    def stream_id(self) -> str:
        """Returns this aggregate's stream id."""
        return stream_id_for(type(self), self.id)

    @property
    def version(self) -> int:
        """Returns the stream version this aggregate was loaded or last saved at."""
        return self._version

    @property
    def pending_events(self) -> tuple[Event, ...]:
        """Returns the events recorded by commands and not saved yet."""
        return tuple(self._pending)

    def record(self, event: Event) -> None:
        """Applies a new event to the state and keeps it for the next save."""
        self._apply(event)
        self._pending.append(event)

    def _apply(self, event: Event) -> None:
        handler = self.__handlers__.get(type(event))
        if handler is None:
            raise AggregateError(
                f"{type(self).__qualname__} has no @applies handler for {type(event).__qualname__}"
            )
        handler(self, event)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copies the aggregate; the copy gets its own list of pending events."""
        copied = super().model_copy(update=update, deep=deep)
        copied._pending = list(self._pending)
        return copied

    @classmethod
    def from_events(cls: type[A], aggregate_id: str, events: Sequence[Event]) -> A:
        """Rebuilds an aggregate from plain events (versions 1..n), e.g. in tests."""
        aggregate = cls.blank(aggregate_id)
        for event in events:
            aggregate._apply(event)
        aggregate._version = len(events)
        return aggregate

    @classmethod
    def blank(cls: type[A], aggregate_id: str) -> A:
        """Returns the aggregate before its first event (override for custom defaults)."""
        return cls(id=aggregate_id)


# For loaders (the repositories, the testing kit), as functions rather than methods, so
# that they take no name in the namespace of every user's aggregate class.


def stream_id_for(aggregate: type[Aggregate], aggregate_id: str) -> str:
    """Returns the stream id of the aggregate of this class with this id."""
    category = aggregate.__dict__.get("category") or getattr(aggregate, "category", None)
    if not category:
        raise AggregateError(f"{aggregate.__qualname__} must declare `category: ClassVar[str]`")
    return validate_stream_id(f"{category}-{aggregate_id}")


def apply_stored(aggregate: Aggregate, event: Event) -> None:
    """Applies a stored event while loading; the loader sets the version once at the end."""
    aggregate._apply(event)


def handlers_of(aggregate: Aggregate) -> Mapping[type[Event], Handler]:
    """Returns the aggregate's ``@applies`` handlers by event class, for loaders' loops.

    A loader calls ``handler(aggregate, event)`` itself (two calls fewer per event than
    `apply_stored`) and sends an event with no handler to `apply_stored` for its error.
    """
    return type(aggregate).__handlers__


def loaded_at(aggregate: Aggregate, version: int) -> None:
    """Sets the version a loader brought the aggregate to."""
    aggregate._version = version


def mark_saved(aggregate: Aggregate, version: int) -> None:
    """Forgets the pending events after a save that brought the stream to ``version``."""
    aggregate._pending.clear()
    aggregate._version = version


def to_snapshot(aggregate: Aggregate, event_id: UUID) -> Snapshot:
    """Encodes the aggregate's state at its current version, bound to the event there."""
    return Snapshot(
        stream_id=aggregate.stream_id,
        version=aggregate.version,
        state_type=type(aggregate).__qualname__,
        schema_version=type(aggregate).snapshot_version,
        state=aggregate.model_dump_json(),
        event_id=event_id,
    )


def from_snapshot(
    aggregate: type[A], snapshot: Snapshot, aggregate_id: str | None = None
) -> A | None:
    """Restores an aggregate from a snapshot, or returns None when it is not usable.

    It is not usable when another ``snapshot_version`` or another class (sharing the
    category) wrote it, when its state no longer validates against the class's fields,
    when its version is below 1, or when it belongs to another aggregate than
    ``aggregate_id`` (a row copied between streams would otherwise hand out another
    aggregate's state, and the next save would append to the wrong stream).
    """
    if snapshot.schema_version != aggregate.snapshot_version or snapshot.version < 1:
        return None
    if snapshot.state_type != aggregate.__qualname__:
        return None
    try:
        restored = aggregate.model_validate_json(snapshot.state)
    except ValidationError:
        return None
    if aggregate_id is not None and (
        restored.id != aggregate_id or snapshot.stream_id != stream_id_for(aggregate, aggregate_id)
    ):
        return None
    restored._version = snapshot.version
    return restored
