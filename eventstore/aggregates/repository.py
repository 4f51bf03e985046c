# Generated from repository_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
"""Repositories: load aggregates, save new events, retry commands on conflicts.

`repository_async.py` is the source and `repository.py` its generated sync twin (see
`tools/async_to_sync.py`).

Besides loading and saving, the repositories speak the language of HTTP APIs:

- ``expected_version=`` (an ``If-Match``): the command runs only on that version, never
  retried, and a conflict raises `WrongExpectedVersionError`;
- ``idempotency_key=`` (an ``Idempotency-Key``): the events get ids derived from the key
  (`eventstore.aggregates.idempotency`), and a repeat returns the original result, with
  ``append.repeated`` set, instead of running the command again;
- `AsyncRepository.create`: a command that must start a new stream;
- ``version=`` on loads: the aggregate as it was at that version;
- ``serialize=True``: writers of one stream queue on its lock (taken after the load,
  followed by a short catch-up read) instead of conflicting and retrying (see
  docs/how-to/aggregates.md, "Hot aggregates").
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, TypeVar
from uuid import UUID

from eventstore._acompat import sleep
from eventstore._append import validate_stream_id
from eventstore.aggregates import aggregate as _aggregate
from eventstore.aggregates.aggregate import Aggregate
from eventstore.aggregates.decider import Decider
from eventstore.aggregates.idempotency import idempotent_event_id, idempotent_event_ids
from eventstore.aggregates.results import CommandResult, DeciderResult, Retry
from eventstore.errors import (
    AggregateNotFoundError,
    ConfigurationError,
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    WrongExpectedVersionError,
)
from eventstore.events import Event, EventMetadata, RecordedEvent
from eventstore.store import (
    NO_STREAM,
    AppendResult,
    ConnectionLike,
    EventStore,
    StreamInfo,
)

__all__ = ["DeciderRepository", "Repository"]

A = TypeVar("A", bound=Aggregate)
C = TypeVar("C")
S = TypeVar("S")
R = TypeVar("R")
logger = logging.getLogger("eventstore.repository")
RetryHook = Callable[[Retry], None]
# How many aggregates a serialising repository keeps a copy of, its most recent ones.
WARM_AGGREGATES: Final = 128


class _Retries:
    """Runs a command's attempts: bounded, exponential backoff with full jitter, observable.

    Each retry is logged at debug (with the attempt number), counted in ``count`` and
    passed to the ``on_retry`` hook.
    """

    def __init__(self, attempts: int, on_retry: RetryHook | None) -> None:
        if attempts < 1:
            raise ConfigurationError("attempts must be >= 1")
        self.attempts = attempts
        self.on_retry = on_retry
        self.count = 0

    def run(self, stream_id: str, attempts: int, once: Callable[[], R]) -> R:
        attempt = 1
        while True:
            try:
                return once()
            except WrongExpectedVersionError as exc:
                if attempt >= attempts:
                    raise
                self._note(Retry(stream_id, attempt, exc))
            sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
            attempt += 1

    def _note(self, retry: Retry) -> None:
        self.count += 1
        logger.debug(
            "retrying a command after a conflict (attempt %d failed)",
            retry.attempt,
            extra={"stream_id": retry.stream_id, "attempt": retry.attempt},
        )
        if self.on_retry is not None:
            self.on_retry(retry)


class _Watch:
    """Recognises, while a stream is replayed, the events a keyed command appended before.

    Replay applies events up to the end of that earlier append and no further, so the
    state is the one the original command returned.
    """

    def __init__(self, key: str, stream_id: str) -> None:
        self.key = key
        self.stream_id = stream_id
        self.matched: list[RecordedEvent[Event]] = []
        self.done = False
        self.whole_stream = True  # False when the replay started from a snapshot
        self._next = idempotent_event_id(key, stream_id, 0)

    def reset(self) -> None:
        """Forgets what was seen, for a replay that starts over."""
        self.matched, self.done, self.whole_stream = [], False, True
        self._next = idempotent_event_id(self.key, self.stream_id, 0)

    def applies(self, record: RecordedEvent[Event]) -> bool:
        """Tells whether to apply this record (False once past the earlier append)."""
        if self.done:
            return False
        if record.event_id == self._next:
            self.matched.append(record)
            self._next = idempotent_event_id(self.key, self.stream_id, len(self.matched))
            return True
        if self.matched:
            self.done = True
            return False
        return True

    def repeat(self) -> AppendResult | None:
        """Returns the earlier append as a repeated `AppendResult`, or None if none was seen."""
        matched = self.matched
        if not matched:
            return None
        return AppendResult(
            stream_id=self.stream_id,
            first_version=matched[0].version,
            last_version=matched[-1].version,
            positions=tuple(r.global_position for r in matched),
            transaction_id=matched[0].transaction_id,
            event_ids=tuple(r.event_id for r in matched),
            repeated=True,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class _Command(Generic[A]):
    aggregate_id: str
    command: Callable[[A], object]
    create: bool
    new: bool
    expected_version: int | None
    idempotency_key: str | None
    metadata: EventMetadata | Mapping[str, Any] | None


def _check_expected(expected_version: int | None) -> None:
    if expected_version is not None and (
        isinstance(expected_version, bool) or expected_version < 0
    ):
        raise InvalidArgumentError("expected_version must be a version >= 0 (0: no stream)")


def _check_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not idempotency_key:
        raise InvalidArgumentError("an idempotency key must not be empty")


def _event_ids(
    stream_id: str, count: int, event_ids: Sequence[UUID] | None, idempotency_key: str | None
) -> Sequence[UUID] | None:
    if event_ids is not None and idempotency_key is not None:
        raise InvalidArgumentError("pass event_ids or an idempotency key, not both")
    if idempotency_key is not None:
        return idempotent_event_ids(idempotency_key, stream_id, count)
    return event_ids


def _conflict(stream_id: str, expected: object, version: int) -> WrongExpectedVersionError:
    return WrongExpectedVersionError(stream_id, expected, version or None)


class Repository(Generic[A]):
    """Loads and saves one aggregate class through an event store.

    With ``snapshot_every=N`` a snapshot is written whenever a save crosses a multiple of
    N; loading then reads the snapshot and only the tail of the stream. A snapshot whose
    ``snapshot_version`` differs from the class's, or that no longer validates, is ignored.

    Commands retry on concurrent writers up to ``attempts`` times; each retry is logged at
    debug, counted in `retries` and passed to ``on_retry``. With ``serialize=True``,
    `update` and `create` run in a transaction (their `command_transaction`, or the
    caller's) and take the stream's lock (`lock_stream`) between loading and catching up
    on what was written meanwhile, so concurrent writers of one aggregate queue instead of
    retrying. In their own transaction they keep a copy of the aggregates they last
    committed (up to `WARM_AGGREGATES`): the next command on one of them skips the load and
    only catches up from that copy's version, under the lock.
    """

    def __init__(
        self,
        store: EventStore,
        aggregate: type[A],
        *,
        snapshot_every: int | None = None,
        attempts: int = 10,
        serialize: bool = False,
        on_retry: RetryHook | None = None,
    ) -> None:
        if snapshot_every is not None and snapshot_every < 1:
            raise ConfigurationError("snapshot_every must be >= 1")
        _aggregate.stream_id_for(aggregate, "probe")  # fails early without a category
        self.store = store
        self.aggregate = aggregate
        self.snapshot_every = snapshot_every
        self.serialize = serialize
        self._retries = _Retries(attempts, on_retry)
        self._warm: dict[str, A] = {}  # aggregate id -> a copy as last committed

    @property
    def attempts(self) -> int:
        """Returns how many times a command runs at most (the first attempt included)."""
        return self._retries.attempts

    @property
    def retries(self) -> int:
        """Returns how many retries this repository's commands have made so far."""
        return self._retries.count

    def stream_id_for(self, aggregate_id: str) -> str:
        """Returns the stream id of the aggregate with this id."""
        return _aggregate.stream_id_for(self.aggregate, aggregate_id)

    def get_or_none(
        self,
        aggregate_id: str,
        *,
        version: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> A | None:
        """Returns the aggregate rebuilt from its snapshot and events, or None.

        With ``version`` it is the aggregate as of that version, or None when the stream
        has not reached it.
        """
        if version is not None and (isinstance(version, bool) or version < 1):
            raise InvalidArgumentError("version must be >= 1")
        aggregate = self._load(aggregate_id, version, None, conn)
        if aggregate is None or (version is not None and aggregate.version != version):
            return None
        return aggregate

    def get(
        self,
        aggregate_id: str,
        *,
        version: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> A:
        """Returns the aggregate (as of ``version`` if given).

        Raises `AggregateNotFoundError` when it has no events (or not that many).
        """
        aggregate = self.get_or_none(aggregate_id, version=version, conn=conn)
        if aggregate is None:
            raise AggregateNotFoundError(self.aggregate.__qualname__, aggregate_id)
        return aggregate

    def _load(
        self,
        aggregate_id: str,
        upto: int | None,
        watch: _Watch | None,
        conn: ConnectionLike | None,
    ) -> A | None:
        stream_id = self.stream_id_for(aggregate_id)
        aggregate = self._from_snapshot(aggregate_id, stream_id, upto, conn)
        # Without an event at the snapshot's version (stream truncated, restored from an
        # older backup...) the snapshot cannot be trusted: replay everything instead.
        if aggregate is not None and self._replay(
            aggregate, stream_id, aggregate.version, upto, watch, conn
        ):
            if watch is not None:
                watch.whole_stream = False
            return aggregate
        if watch is not None and watch.matched:  # from a snapshot that could not be used
            watch = _Watch(watch.key, watch.stream_id)
        aggregate = self.aggregate.blank(aggregate_id)
        self._replay(aggregate, stream_id, 0, upto, watch, conn)
        return aggregate if aggregate.version > 0 else None

    def _replay(
        self,
        aggregate: A,
        stream_id: str,
        base: int,
        upto: int | None,
        watch: _Watch | None,
        conn: ConnectionLike | None,
    ) -> bool:
        """Applies the events after ``base``; tells whether the event at ``base`` exists."""
        version, seen_base = base, base == 0
        apply = _aggregate.apply_stored
        start = max(base, 1)
        if upto is None and watch is None:  # the common case: the lean read
            handlers = _aggregate.handlers_of(aggregate)
            for loaded, event in self.store.read_stream_data(
                stream_id, from_version=start, conn=conn
            ):
                if loaded == base:
                    seen_base = True
                    continue
                handler = handlers.get(type(event))
                if handler is None:
                    apply(aggregate, event)  # raises the aggregate's typed error
                else:
                    handler(aggregate, event)
                version = loaded
        else:
            limit = None if upto is None else upto - start + 1
            for record in self.store.read_stream(
                stream_id, from_version=start, limit=limit, conn=conn
            ):
                if record.version == base:
                    seen_base = True
                elif watch is None or watch.applies(record):
                    apply(aggregate, record.data)
                    version = record.version
        _aggregate.loaded_at(aggregate, version)
        return seen_base

    def _from_snapshot(
        self,
        aggregate_id: str,
        stream_id: str,
        upto: int | None,
        conn: ConnectionLike | None,
    ) -> A | None:
        if self.snapshot_every is None:
            return None
        snapshot = self.store.load_snapshot(stream_id, conn=conn)
        if snapshot is None or (upto is not None and snapshot.version > upto):
            return None
        return _aggregate.from_snapshot(self.aggregate, snapshot, aggregate_id)

    def save(
        self,
        aggregate: A,
        *,
        expected_version: int | None = None,
        event_ids: Sequence[UUID] | None = None,
        idempotency_key: str | None = None,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: ConnectionLike | None = None,
    ) -> CommandResult[A]:
        """Appends the pending events at the version the aggregate was loaded at.

        Returns the aggregate, the events and the `AppendResult`; with no pending events
        nothing is written, and ``append`` is None. Raises `WrongExpectedVersionError` when
        another writer saved first, or when ``expected_version`` (0: a new stream) is not
        the version the aggregate was loaded at. ``event_ids`` (one per pending event) or
        an ``idempotency_key`` make the save idempotent: saving the same events at the same
        version again returns the original append, with ``repeated`` set.
        """
        _check_expected(expected_version)
        _check_key(idempotency_key)
        if expected_version is not None and expected_version != aggregate.version:
            raise _conflict(aggregate.stream_id, expected_version, aggregate.version)
        return self._save(aggregate, event_ids, idempotency_key, metadata, conn, own=False)

    def _save(
        self,
        aggregate: A,
        event_ids: Sequence[UUID] | None,
        idempotency_key: str | None,
        metadata: EventMetadata | Mapping[str, Any] | None,
        conn: ConnectionLike | None,
        *,
        own: bool,
    ) -> CommandResult[A]:
        """Appends the pending events; ``own``: ``conn`` is a `command_transaction` of ours."""
        events = aggregate.pending_events
        if not events:
            return CommandResult(aggregate, events, None)
        result = self.store.append(
            aggregate.stream_id,
            events,
            expected_version=aggregate.version or NO_STREAM,
            metadata=metadata,
            event_ids=_event_ids(aggregate.stream_id, len(events), event_ids, idempotency_key),
            conn=conn,
        )
        previous = aggregate.version
        _aggregate.mark_saved(aggregate, result.last_version)
        if self._crosses_snapshot(previous, result.last_version):
            self._save_snapshot(aggregate, result.event_ids[-1], conn, own=own)
        return CommandResult(aggregate, events, result)

    def _save_snapshot(
        self, aggregate: A, event_id: UUID, conn: ConnectionLike | None, *, own: bool
    ) -> None:
        # The events are committed (or in the caller's transaction) already; a snapshot is
        # only a cache, so failing to make or write one must not fail the save, or a caller
        # who retries would apply the command twice. Only a database error inside a
        # caller's transaction propagates: that transaction is aborted and must be retried.
        # (A `command_transaction` of ours was committed by the append: ``own``.)
        try:
            snapshot = _aggregate.to_snapshot(aggregate, event_id)
        except Exception:
            self._log_snapshot_failure(aggregate)
            return
        try:
            self.store.save_snapshot(snapshot, conn=conn)
        except Exception:
            if conn is not None and not own:
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

    def update(
        self,
        aggregate_id: str,
        command: Callable[[A], object],
        *,
        create: bool = False,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: ConnectionLike | None = None,
    ) -> CommandResult[A]:
        """Loads, runs ``command(aggregate)`` and saves, retrying on concurrent writers.

        Each attempt reloads the aggregate. With ``create=True`` a missing aggregate starts
        blank instead of raising `AggregateNotFoundError`. A command that raises saves
        nothing. Returns what `save` returns: the aggregate, the events the command
        recorded and the `AppendResult` (None when it recorded nothing).

        With ``expected_version`` the command runs only if the aggregate is at that version
        (0: it does not exist yet) and is not retried: a conflict raises
        `WrongExpectedVersionError`. With ``idempotency_key``, a command whose events were
        appended before under that key is not run again: the aggregate as of that append,
        its events and its `AppendResult` (``repeated=True``) are returned.
        """
        return self._command(
            _Command(
                aggregate_id, command, create, False, expected_version, idempotency_key, metadata
            ),
            conn,
        )

    def create(
        self,
        aggregate_id: str,
        command: Callable[[A], object],
        *,
        idempotency_key: str | None = None,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: ConnectionLike | None = None,
    ) -> CommandResult[A]:
        """Runs ``command`` on a new, blank aggregate and saves it as a new stream.

        Raises `WrongExpectedVersionError` (expected "no stream") when the aggregate
        exists already, without running the command; it is never retried. With
        ``idempotency_key`` a repeat of the same creation returns the original result.
        """
        return self._command(
            _Command(aggregate_id, command, True, True, None, idempotency_key, metadata), conn
        )

    def _command(self, cmd: _Command[A], conn: ConnectionLike | None) -> CommandResult[A]:
        _check_expected(cmd.expected_version)
        _check_key(cmd.idempotency_key)
        stream_id = self.stream_id_for(cmd.aggregate_id)
        fixed = cmd.new or cmd.expected_version is not None
        attempts = 1 if fixed else self._retries.attempts
        return self._retries.run(stream_id, attempts, lambda: self._serialized(cmd, conn))

    def _serialized(self, cmd: _Command[A], conn: ConnectionLike | None) -> CommandResult[A]:
        if not self.serialize:
            return self._run_once(cmd, conn, lock=False)
        if conn is not None:
            return self._run_once(cmd, conn, lock=True)
        # The lock is held from its grant to the commit. In a command transaction the lock
        # travels with the catch-up read and the COMMIT with the append (one round trip
        # each), so writers queue for about one round trip and a WAL flush per command.
        # A warm copy (popped: one command at a time uses it) replaces the load: the
        # catch-up under the lock brings it to the stream's version, as it does a load.
        warm = None if cmd.idempotency_key else self._warm.pop(cmd.aggregate_id, None)
        with self.store.command_transaction() as tx:
            result = self._run_once(cmd, tx, lock=True, own=True, warm=warm)
        self._keep_warm(cmd.aggregate_id, result)
        return result

    def _keep_warm(self, aggregate_id: str, result: CommandResult[A]) -> None:
        """Keeps a copy of a committed aggregate (the caller may change the one returned)."""
        if result.aggregate.version == 0 or (result.append and result.append.repeated):
            return  # no stream yet (a blank would pass for one), or an earlier state
        self._warm[aggregate_id] = result.aggregate.model_copy(deep=True)
        if len(self._warm) > WARM_AGGREGATES:
            self._warm.pop(next(iter(self._warm)), None)  # the least recently kept

    def _run_once(
        self,
        cmd: _Command[A],
        conn: ConnectionLike | None,
        *,
        lock: bool,
        own: bool = False,
        warm: A | None = None,
    ) -> CommandResult[A]:
        stream_id = self.stream_id_for(cmd.aggregate_id)
        watch = None if cmd.idempotency_key is None else _Watch(cmd.idempotency_key, stream_id)
        aggregate = warm
        if aggregate is None:
            aggregate = self._load(cmd.aggregate_id, None, watch, conn)
        if lock and (watch is None or watch.repeat() is None):
            # The load ran before the lock, alongside the writer that holds it; once the
            # lock is ours, one short read applies whatever was written meanwhile.
            self.store.lock_stream(stream_id, conn=conn)
            aggregate = self._catch_up(cmd.aggregate_id, aggregate, watch, conn)
        repeat = None if watch is None else watch.repeat()
        if aggregate is not None and watch is not None and repeat is not None:
            return CommandResult(aggregate, tuple(r.data for r in watch.matched), repeat)
        if aggregate is not None and cmd.new:
            raise _conflict(stream_id, NO_STREAM, aggregate.version)
        if aggregate is None:
            if not cmd.create:
                raise AggregateNotFoundError(self.aggregate.__qualname__, cmd.aggregate_id)
            aggregate = self.aggregate.blank(cmd.aggregate_id)
        if cmd.expected_version is not None and cmd.expected_version != aggregate.version:
            raise _conflict(stream_id, cmd.expected_version, aggregate.version)
        if watch is None or watch.whole_stream:
            return self._decide_and_save(aggregate, cmd, conn, own)
        # The replay started from a snapshot, so a repeat older than it went unseen: when
        # the command now fails, or its ids turn out to be stored, look at the whole stream.
        try:
            return self._decide_and_save(aggregate, cmd, conn, own)
        except WrongExpectedVersionError:
            raise  # retried: the next attempt reloads
        except Exception as exc:
            if isinstance(exc, EventStoreError) and not isinstance(exc, DuplicateEventIdError):
                raise
            earlier = self._repeat_in_whole_stream(cmd, conn)
            if earlier is None:
                raise
            return earlier

    def _catch_up(
        self,
        aggregate_id: str,
        aggregate: A | None,
        watch: _Watch | None,
        conn: ConnectionLike | None,
    ) -> A | None:
        """Applies the events written since ``aggregate`` was loaded."""
        stream_id = self.stream_id_for(aggregate_id)
        if aggregate is None:
            aggregate = self.aggregate.blank(aggregate_id)
            self._replay(aggregate, stream_id, 0, None, watch, conn)
            return aggregate if aggregate.version > 0 else None
        if self._replay(aggregate, stream_id, aggregate.version, None, watch, conn):
            return aggregate
        if watch is not None:  # the stream lost the event loaded last: start over
            watch.reset()
        return self._load(aggregate_id, None, watch, conn)

    def _repeat_in_whole_stream(
        self, cmd: _Command[A], conn: ConnectionLike | None
    ) -> CommandResult[A] | None:
        """Returns the earlier result of a keyed command, found by replaying all events."""
        assert cmd.idempotency_key is not None
        stream_id = self.stream_id_for(cmd.aggregate_id)
        watch = _Watch(cmd.idempotency_key, stream_id)
        aggregate = self.aggregate.blank(cmd.aggregate_id)
        self._replay(aggregate, stream_id, 0, None, watch, conn)
        repeat = watch.repeat()
        if repeat is None:
            return None
        return CommandResult(aggregate, tuple(r.data for r in watch.matched), repeat)

    def _decide_and_save(
        self, aggregate: A, cmd: _Command[A], conn: ConnectionLike | None, own: bool
    ) -> CommandResult[A]:
        if inspect.isawaitable(result := cmd.command(aggregate)):
            close = getattr(result, "close", None)
            if close is not None:
                close()  # never awaited: close it so no "never awaited" warning is left
            raise TypeError(
                "update() runs synchronous commands on the aggregate; run async work first"
            )
        return self._save(aggregate, None, cmd.idempotency_key, cmd.metadata, conn, own=own)


class DeciderRepository(Generic[C, S]):
    """Runs commands through a `Decider`: fold the stream, decide, append, retry.

    Retries are observable and ``serialize=True`` queues writers on the stream's lock, as
    in `AsyncRepository`.
    """

    def __init__(
        self,
        store: EventStore,
        decider: Decider[C, S],
        *,
        attempts: int = 10,
        serialize: bool = False,
        on_retry: RetryHook | None = None,
    ):
        self.store = store
        self.decider = decider
        self.serialize = serialize
        self._retries = _Retries(attempts, on_retry)

    @property
    def attempts(self) -> int:
        """Returns how many times a command runs at most (the first attempt included)."""
        return self._retries.attempts

    @property
    def retries(self) -> int:
        """Returns how many retries this repository's commands have made so far."""
        return self._retries.count

    def stream_id_for(self, aggregate_id: str) -> str:
        """Returns the stream id of the aggregate with this id."""
        return validate_stream_id(f"{self.decider.category}-{aggregate_id}")

    def load(
        self,
        aggregate_id: str,
        *,
        version: int | None = None,
        conn: ConnectionLike | None = None,
    ) -> tuple[S, StreamInfo]:
        """Returns the folded state and the stream's version.

        With ``version``, the state as of that version; raises `AggregateNotFoundError`
        when the stream has not reached it.
        """
        if version is not None and (isinstance(version, bool) or version < 1):
            raise InvalidArgumentError("version must be >= 1")
        state, info = self._fold(aggregate_id, version, None, conn)
        if version is not None and info.version != version:
            raise AggregateNotFoundError(self.decider.category, aggregate_id)
        return state, info

    def _fold(
        self,
        aggregate_id: str,
        upto: int | None,
        watch: _Watch | None,
        conn: ConnectionLike | None,
        since: tuple[S, StreamInfo] | None = None,
    ) -> tuple[S, StreamInfo]:
        """Folds the stream (up to ``upto``), or only what follows ``since``."""
        stream_id = self.stream_id_for(aggregate_id)
        state, version = self.decider.initial_state(), 0
        if since is not None:
            state, version = since[0], since[1].version
        start = version + 1
        if upto is None and watch is None:
            for loaded, event in self.store.read_stream_data(
                stream_id, from_version=start, conn=conn
            ):
                state = self.decider.evolve(state, event)
                version = loaded
        else:
            for record in self.store.read_stream(
                stream_id, from_version=start, limit=upto, conn=conn
            ):
                if watch is None or watch.applies(record):
                    state = self.decider.evolve(state, record.data)
                    version = record.version
        return state, StreamInfo(stream_id, exists=version > 0, version=version)

    def handle(
        self,
        aggregate_id: str,
        command: C,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        metadata: EventMetadata | Mapping[str, Any] | None = None,
        conn: ConnectionLike | None = None,
    ) -> DeciderResult[S]:
        """Decides on the current state and appends the decided events, retrying on conflicts.

        Returns the state with the events applied, the events and the `AppendResult`
        (None when the decision was empty: nothing is appended then). ``expected_version``
        and ``idempotency_key`` work as in `AsyncRepository.update`
        (``expected_version=0``: the stream must be new).
        """
        _check_expected(expected_version)
        _check_key(idempotency_key)
        stream_id = self.stream_id_for(aggregate_id)
        attempts = 1 if expected_version is not None else self._retries.attempts

        def once() -> DeciderResult[S]:
            args = (aggregate_id, command, expected_version, idempotency_key, metadata)
            if not self.serialize or conn is not None:
                return self._handle_once(*args, conn, lock=self.serialize)
            with self.store.command_transaction() as tx:  # see AsyncRepository
                return self._handle_once(*args, tx, lock=True)

        return self._retries.run(stream_id, attempts, once)

    def _handle_once(
        self,
        aggregate_id: str,
        command: C,
        expected_version: int | None,
        idempotency_key: str | None,
        metadata: EventMetadata | Mapping[str, Any] | None,
        conn: ConnectionLike | None,
        *,
        lock: bool,
    ) -> DeciderResult[S]:
        stream_id = self.stream_id_for(aggregate_id)
        watch = None if idempotency_key is None else _Watch(idempotency_key, stream_id)
        state, info = self._fold(aggregate_id, None, watch, conn)
        if lock and (watch is None or watch.repeat() is None):
            # Folded before the lock; once it is ours, fold what was written meanwhile.
            self.store.lock_stream(stream_id, conn=conn)
            state, info = self._fold(aggregate_id, None, watch, conn, since=(state, info))
        repeat = None if watch is None else watch.repeat()
        if watch is not None and repeat is not None:
            return DeciderResult(state, tuple(r.data for r in watch.matched), repeat)
        if expected_version is not None and expected_version != info.version:
            raise _conflict(stream_id, expected_version, info.version)
        events = tuple(self.decider.decide(command, state))
        if not events:
            return DeciderResult(state, events, None)
        result = self.store.append(
            stream_id,
            events,
            expected_version=info.version or NO_STREAM,
            metadata=metadata,
            event_ids=_event_ids(stream_id, len(events), None, idempotency_key),
            conn=conn,
        )
        for event in events:
            state = self.decider.evolve(state, event)
        return DeciderResult(state, events, result)
