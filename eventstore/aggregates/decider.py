"""The functional aggregate: ``decide(command, state)`` and ``evolve(state, event)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from eventstore.events import Event

__all__ = ["Decider"]

S = TypeVar("S")
C_contra = TypeVar("C_contra", contravariant=True)


class Decider(Protocol, Generic[C_contra, S]):
    """Describes a functional aggregate: ``decide(command, state)`` and ``evolve``."""

    category: str

    def initial_state(self) -> S: ...

    def decide(self, command: C_contra, state: S) -> Sequence[Event]: ...

    def evolve(self, state: S, event: Event) -> S: ...
