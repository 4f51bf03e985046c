"""Aggregates and repositories: class-based (`Aggregate`) and functional (`Decider`)."""

from eventstore.aggregates.aggregate import Aggregate, applies
from eventstore.aggregates.decider import Decider
from eventstore.aggregates.idempotency import idempotent_event_id, idempotent_event_ids
from eventstore.aggregates.repository import DeciderRepository, Repository
from eventstore.aggregates.repository_async import AsyncDeciderRepository, AsyncRepository
from eventstore.aggregates.results import CommandResult, DeciderResult, Retry

__all__ = [
    "Aggregate",
    "AsyncDeciderRepository",
    "AsyncRepository",
    "CommandResult",
    "Decider",
    "DeciderRepository",
    "DeciderResult",
    "Repository",
    "Retry",
    "applies",
    "idempotent_event_id",
    "idempotent_event_ids",
]
