"""The testing kit: given/when/then for aggregates and deciders, in-memory repositories.

For example:

    def test_withdrawing_more_than_the_balance_is_refused() -> None:
        given(Account, Opened(owner="ann"), Deposited(amount=5)).when(
            lambda account: account.withdraw(10)
        ).then_raises(InsufficientFunds)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from eventstore.aggregates.aggregate import Aggregate
from eventstore.aggregates.decider import Decider
from eventstore.aggregates.repository import Repository
from eventstore.aggregates.repository_async import AsyncRepository
from eventstore.events import Event
from eventstore.memory import AsyncInMemoryEventStore, InMemoryEventStore
from eventstore.registry import EventRegistry

__all__ = [
    "AggregateScenario",
    "DeciderScenario",
    "Outcome",
    "given",
    "given_decider",
    "in_memory_async_repository",
    "in_memory_repository",
]

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C")
S = TypeVar("S")


class Outcome:
    """Holds what a command did: the new events or the error it raised."""

    def __init__(self, events: Sequence[Event], error: BaseException | None) -> None:
        self.events = list(events)
        self.error = error

    def then(self, *expected: Event) -> None:
        """Asserts the command recorded exactly these events, in order."""
        if self.error is not None:
            raise AssertionError(f"expected events, but the command raised {self.error!r}")
        if self.events != list(expected):
            raise AssertionError(f"expected events {list(expected)}, got {self.events}")

    def then_nothing(self) -> None:
        """Asserts the command succeeded and recorded no event."""
        self.then()

    def then_raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        """Asserts the command raised ``error`` (message matching ``match``) and returns it."""
        if self.error is None:
            raise AssertionError(f"expected {error.__name__}, but it recorded {self.events}")
        if not isinstance(self.error, error):
            raise AssertionError(f"expected {error.__name__}, got {self.error!r}")
        if match is not None and not re.search(match, str(self.error)):
            raise AssertionError(f"{str(self.error)!r} does not match {match!r}")
        return self.error


class AggregateScenario(Generic[A]):
    """Holds the given events of an aggregate, ready for commands (each on a fresh copy)."""

    def __init__(self, aggregate: type[A], aggregate_id: str, events: Sequence[Event]) -> None:
        self.aggregate_class = aggregate
        self.aggregate_id = aggregate_id
        self.events = list(events)
        self.aggregate = aggregate.from_events(aggregate_id, self.events)

    def when(self, command: Callable[[A], object]) -> Outcome:
        """Runs the command and captures the events it recorded or the error it raised."""
        self.aggregate = self.aggregate_class.from_events(self.aggregate_id, self.events)
        try:
            if inspect.isawaitable(result := command(self.aggregate)):
                close = getattr(result, "close", None)
                if close is not None:
                    close()  # never awaited: close it so no warning is left behind
                raise TypeError("commands are synchronous; the command returned an awaitable")
        except Exception as exc:
            return Outcome(self.aggregate.pending_events, exc)
        return Outcome(self.aggregate.pending_events, None)


def given(aggregate: type[A], *events: Event, aggregate_id: str = "test") -> AggregateScenario[A]:
    """Starts a scenario: the aggregate after these events (none: a new aggregate)."""
    return AggregateScenario(aggregate, aggregate_id, events)


class DeciderScenario(Generic[C, S]):
    """Holds a decider's state folded from given events, ready for a command."""

    def __init__(self, decider: Decider[C, S], events: Sequence[Event]) -> None:
        self.decider = decider
        state = decider.initial_state()
        for event in events:
            state = decider.evolve(state, event)
        self.state = state

    def when(self, command: C) -> Outcome:
        """Decides the command on the folded state."""
        try:
            return Outcome(self.decider.decide(command, self.state), None)
        except Exception as exc:
            return Outcome([], exc)


def given_decider(decider: Decider[C, S], *events: Event) -> DeciderScenario[C, S]:
    """Starts a decider scenario from these events."""
    return DeciderScenario(decider, events)


def in_memory_repository(
    aggregate: type[A], registry: EventRegistry, *, snapshot_every: int | None = None
) -> Repository[A]:
    """Returns a repository over a fresh in-memory event store."""
    return Repository(InMemoryEventStore(registry), aggregate, snapshot_every=snapshot_every)


def in_memory_async_repository(
    aggregate: type[A], registry: EventRegistry, *, snapshot_every: int | None = None
) -> AsyncRepository[A]:
    """Returns an async repository over a fresh in-memory event store."""
    return AsyncRepository(
        AsyncInMemoryEventStore(registry), aggregate, snapshot_every=snapshot_every
    )
