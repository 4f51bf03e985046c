"""What a repository's command returns: the new state, the events and the append.

Both kinds of repository answer in one vocabulary: ``events`` are the events the command
appended (in order; empty when it decided nothing) and ``append`` is the store's
`AppendResult` for them, None exactly when nothing was appended. Pass ``append`` on to
whatever needs to know where the events landed (positions, ``transaction_id``), such as a
read-your-writes wait on a subscription.
"""

from __future__ import annotations

import dataclasses
from typing import Generic, TypeVar

from eventstore.aggregates.aggregate import Aggregate
from eventstore.errors import WrongExpectedVersionError
from eventstore.events import Event
from eventstore.store import AppendResult

__all__ = ["CommandResult", "DeciderResult", "Retry"]

A = TypeVar("A", bound=Aggregate)
S = TypeVar("S")


@dataclasses.dataclass(frozen=True, slots=True)
class CommandResult(Generic[A]):
    """Holds what `Repository.update` or `save` did: the saved aggregate and its append."""

    aggregate: A
    events: tuple[Event, ...]
    append: AppendResult | None


@dataclasses.dataclass(frozen=True, slots=True)
class DeciderResult(Generic[S]):
    """Holds what `DeciderRepository.handle` did: the new state, the events, the append."""

    state: S
    events: tuple[Event, ...]
    append: AppendResult | None


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """Describes one retry of a command after a conflict: what ``on_retry`` hooks receive.

    ``attempt`` is the attempt that failed (1 for the first); ``error`` is its conflict.
    """

    stream_id: str
    attempt: int
    error: WrongExpectedVersionError
