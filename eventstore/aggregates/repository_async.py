"""Repositories: load aggregates, save new events, retry commands on conflicts.

`repository_async.py` is the source and `repository.py` its generated sync twin (see
`tools/async_to_sync.py`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar
from uuid import UUID

import tenacity

from eventstore._append import validate_stream_id
from eventstore.aggregates import aggregate as _aggregate
from eventstore.aggregates.aggregate import Aggregate
from eventstore.aggregates.decider import Decider
from eventstore.aggregates.results import CommandResult, DeciderResult
from eventstore.errors import AggregateNotFoundError, ConfigurationError, WrongExpectedVersionError
from eventstore.events import EventMetadata
from eventstore.store import NO_STREAM, AsyncConnectionLike, AsyncEventStore, StreamInfo

__all__ = ["AsyncDeciderRepository", "AsyncRepository"]

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C")
S = TypeVar("S")
R = TypeVar("R")
logger = logging.getLogger("eventstore.repository")


def _retrying(attempts: int) -> tenacity.AsyncRetrying:
    """Retries on a concurrent writer: bounded, exponential backoff with full jitter."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(WrongExpectedVersionError),
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_random_exponential(multiplier=0.002, max=0.1),
        reraise=True,
    )


class AsyncRepository(Generic[A]):
    """Loads and saves one aggregate class through an event store.

    With ``snapshot_every=N`` a snapshot is written whenever a save crosses a multiple of
    N; loading then reads the snapshot and only the tail of the stream. A snapshot whose
    ``snapshot_version`` differs from the class's, or that no longer validates, is ignored.
    """

    def __init__(
        self,
        store: AsyncEventStore,
        aggregate: type[A],
        *,
        snapshot_every: int | None = None,
        attempts: int = 10,
    ) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ConfigurationError("snapshot_every must be >= 1")
        if attempts < 1:
            raise ConfigurationError("attempts must be >= 1")
        _aggregate.stream_id_for(aggregate, "probe")  # fails early without a category
        self.store = store
        self.aggregate = aggregate
        self.snapshot_every = snapshot_every
        self.attempts = attempts

    def stream_id_for(self, aggregate_id: str) -> str:
        """Returns the stream id of the aggregate with this id."""
        return _aggregate.stream_id_for(self.aggregate, aggregate_id)

    async def get_or_none(
        self, aggregate_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> A | None:
        """Returns the aggregate rebuilt from its snapshot and events, or None."""
        stream_id = self.stream_id_for(aggregate_id)
        aggregate = await self._from_snapshot(aggregate_id, stream_id, conn)
        # Without an event at the snapshot's version (stream truncated, restored from an
        # older backup...) the snapshot cannot be trusted: replay everything instead.
        if aggregate is not None and await self._replay(
            aggregate, stream_id, aggregate.version, conn
        ):
            return aggregate
        aggregate = self.aggregate.blank(aggregate_id)
        await self._replay(aggregate, stream_id, 0, conn)
        return aggregate if aggregate.version > 0 else None

    async def _replay(
        self, aggregate: A, stream_id: str, base: int, conn: AsyncConnectionLike | None
    ) -> bool:
        """Applies the events after ``base``; tells whether the event at ``base`` exists."""
        version, seen_base = base, base == 0
        apply = _aggregate.apply_stored
        async for loaded, event in self.store.read_stream_data(
            stream_id, from_version=max(base, 1), conn=conn
        ):
            if loaded == base:
                seen_base = True
                continue
            apply(aggregate, event)
            version = loaded
        _aggregate.loaded_at(aggregate, version)
        return seen_base

    async def get(self, aggregate_id: str, *, conn: AsyncConnectionLike | None = None) -> A:
        """Returns the aggregate; raises `AggregateNotFoundError` when it has no events."""
        aggregate = await self.get_or_none(aggregate_id, conn=conn)
        if aggregate is None:
            raise AggregateNotFoundError(self.aggregate.__qualname__, aggregate_id)
        return aggregate

    async def _from_snapshot(
        self, aggregate_id: str, stream_id: str, conn: AsyncConnectionLike | None
    ) -> A | None:
        if self.snapshot_every is None:
            return None
        snapshot = await self.store.load_snapshot(stream_id, conn=conn)
        if snapshot is None:
            return None
        return _aggregate.from_snapshot(self.aggregate, snapshot, aggregate_id)

    async def save(
        self,
        aggregate: A,
        *,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> CommandResult[A]:
        """Appends the pending events at the version the aggregate was loaded at.

        Returns the aggregate, the events and the `AppendResult`; with no pending events
        nothing is written, and ``append`` is None. Raises `WrongExpectedVersionError` when
        another writer saved first.
        """
        events = aggregate.pending_events
        if not events:
            return CommandResult(aggregate, events, None)
        expected = aggregate.version or NO_STREAM
        result = await self.store.append(
            aggregate.stream_id, events, expected_version=expected, metadata=metadata, conn=conn
        )
        previous = aggregate.version
        _aggregate.mark_saved(aggregate, result.last_version)
        if self._crosses_snapshot(previous, result.last_version):
            await self._save_snapshot(aggregate, result.event_ids[-1], conn)
        return CommandResult(aggregate, events, result)

    async def _save_snapshot(
        self, aggregate: A, event_id: UUID, conn: AsyncConnectionLike | None
    ) -> None:
        # The events are committed (or in the caller's transaction) already; a snapshot is
        # only a cache, so failing to make or write one must not fail the save, or a caller
        # who retries would apply the command twice. Only a database error inside a
        # caller's transaction propagates: that transaction is aborted and must be retried.
        try:
            snapshot = _aggregate.to_snapshot(aggregate, event_id)
        except Exception:
            self._log_snapshot_failure(aggregate)
            return
        try:
            await self.store.save_snapshot(snapshot, conn=conn)
        except Exception:
            if conn is not None:
                raise
            self._log_snapshot_failure(aggregate)

    @staticmethod
    def _log_snapshot_failure(aggregate: Aggregate) -> None:
        logger.warning(
            "snapshot not saved",
            extra={"stream_id": aggregate.stream_id, "version": aggregate.version},
            exc_info=True,
        )

    def _crosses_snapshot(self, before: int, after: int) -> bool:
        every = self.snapshot_every
        return every is not None and before // every != after // every

    async def update(
        self,
        aggregate_id: str,
        command: Callable[[A], object],
        *,
        create: bool = False,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> CommandResult[A]:
        """Loads, runs ``command(aggregate)`` and saves, retrying on concurrent writers.

        Each attempt reloads the aggregate. With ``create=True`` a missing aggregate starts
        blank instead of raising `AggregateNotFoundError`. A command that raises saves
        nothing. Returns what `save` returns: the aggregate, the events the command
        recorded and the `AppendResult` (None when it recorded nothing).
        """
        try:  # the common case, without building a retry loop
            return await self._update_once(aggregate_id, command, create, metadata, conn)
        except WrongExpectedVersionError:
            if self.attempts == 1:
                raise
        async for attempt in _retrying(self.attempts - 1):
            with attempt:
                return await self._update_once(aggregate_id, command, create, metadata, conn)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _update_once(
        self,
        aggregate_id: str,
        command: Callable[[A], object],
        create: bool,
        metadata: EventMetadata | Mapping[str, Any] | None,
        conn: AsyncConnectionLike | None,
    ) -> CommandResult[A]:
        aggregate = await self.get_or_none(aggregate_id, conn=conn)
        if aggregate is None:
            if not create:
                raise AggregateNotFoundError(self.aggregate.__qualname__, aggregate_id)
            aggregate = self.aggregate.blank(aggregate_id)
        if inspect.isawaitable(result := command(aggregate)):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # never awaited: close it so no "never awaited" warning is left
            raise TypeError(
                "update() runs synchronous commands on the aggregate; run async work first"
            )
        return await self.save(aggregate, metadata=metadata, conn=conn)


class AsyncDeciderRepository(Generic[C, S]):
    """Runs commands through a `Decider`: fold the stream, decide, append, retry."""

    def __init__(self, store: AsyncEventStore, decider: Decider[C, S], *, attempts: int = 10):
        if attempts < 1:
            raise ConfigurationError("attempts must be >= 1")
        self.store = store
        self.decider = decider
        self.attempts = attempts

    def stream_id_for(self, aggregate_id: str) -> str:
        """Returns the stream id of the aggregate with this id."""
        return validate_stream_id(f"{self.decider.category}-{aggregate_id}")

    async def load(
        self, aggregate_id: str, *, conn: AsyncConnectionLike | None = None
    ) -> tuple[S, StreamInfo]:
        """Returns the folded state and the stream's version."""
        state = self.decider.initial_state()
        stream_id = self.stream_id_for(aggregate_id)
        version = 0
        async for loaded, event in self.store.read_stream_data(stream_id, conn=conn):
            state = self.decider.evolve(state, event)
            version = loaded
        return state, StreamInfo(stream_id, exists=version > 0, version=version)

    async def handle(
        self,
        aggregate_id: str,
        command: C,
        *,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: AsyncConnectionLike | None = None,
    ) -> DeciderResult[S]:
        """Decides on the current state and appends the decided events, retrying on conflicts.

        Returns the state with the events applied, the events and the `AppendResult`
        (None when the decision was empty: nothing is appended then).
        """
        async for attempt in _retrying(self.attempts):
            with attempt:
                return await self._handle_once(aggregate_id, command, metadata, conn)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _handle_once(
        self,
        aggregate_id: str,
        command: C,
        metadata: EventMetadata | Mapping[str, Any] | None,
        conn: AsyncConnectionLike | None,
    ) -> DeciderResult[S]:
        state, info = await self.load(aggregate_id, conn=conn)
        events = tuple(self.decider.decide(command, state))
        if not events:
            return DeciderResult(state, events, None)
        result = await self.store.append(
            info.stream_id,
            events,
            expected_version=info.version or NO_STREAM,
            metadata=metadata,
            conn=conn,
        )
        for event in events:
            state = self.decider.evolve(state, event)
        return DeciderResult(state, events, result)
