# Generated from engine_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
# ruff: noqa: SIM117
"""One shard's batch cycle: read the next page of its window, handle it, move the checkpoint.

`engine_async.py` is the source and `engine.py` its generated sync twin (see
`tools/async_to_sync.py`); the runner drives the async one for coroutine handlers and the
sync one, in a thread, for plain functions.

A cycle is ONE database transaction: load the checkpoint, open the next window if needed,
read a page, call the handler on it with the transaction's connection, then move the
checkpoint conditionally on the worker's epoch. Effects and checkpoint commit together, so
the handler's effect is exactly once. If another runner took the shard over meanwhile (this
one was paused past its lease), the conditional update finds nothing, the whole transaction
rolls back, and the worker learns it is fenced.

A failing handler is retried (tenacity: bounded, exponential, jittered); then the
subscription's policy applies. ``halt`` rolls the batch back and halts the shard. ``park``
finds the failing event by retrying smaller halves in savepoints, records it as a dead
letter, and holds its stream: the stream's later events are parked behind it, in order,
while every other stream moves on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import tenacity

from eventstore import _rows
from eventstore._acompat import Handle, spawn
from eventstore.errors import (
    DatabaseUnavailableError,
    InvalidEventError,
    UnknownEventTypeError,
    UpcastError,
)
from eventstore.events import Event, RecordedEvent
from eventstore.postgres.subscriptions import (
    SMALL_WINDOW_XIDS,
    SubscriptionStore,
    live_xids,
)
from eventstore.registry import EventRegistry
from eventstore.sharding import shard_key
from eventstore.subscriptions.records import (
    FencedError,
    HaltedError,
    PostponedError,
    RetryOutcome,
    StepResult,
)
from eventstore.subscriptions.subscription import Batch, Subscription
from eventstore.subscriptions.window import PgSnapshot, Window

__all__ = ["ShardWorker", "discard_dead_letters", "retry_dead_letters"]

logger = logging.getLogger("eventstore.subscriptions")

_UNDECODABLE = (UnknownEventTypeError, UpcastError, InvalidEventError)


class _Page(NamedTuple):
    """A page of rows, with their events when it was decoded ahead (None for a row that
    did not decode there)."""

    rows: list[_rows.RawRow]
    decoded: list[RecordedEvent[Event] | None] | None


def _decoded(
    registry: EventRegistry, rows: list[_rows.RawRow]
) -> list[RecordedEvent[Event] | None]:
    """Decodes rows ahead of their batch; a row that fails is left for the batch to park."""
    events: list[RecordedEvent[Event] | None] = []
    for row in rows:
        try:
            events.append(_rows.decode_row(registry, row))
        except Exception:
            events.append(None)
    return events


@dataclasses.dataclass(frozen=True, slots=True)
class _Parked:
    position: int
    stream_id: str
    version: int
    event_id: Any
    event_type: str


def _parked(event: RecordedEvent[Event]) -> _Parked:
    return _Parked(
        event.global_position, event.stream_id, event.version, event.event_id, event.event_type
    )


class ShardWorker:
    """Runs the batch cycle of one shard of one subscription, holding it at ``epoch``."""

    def __init__(
        self,
        source: SubscriptionStore,
        subscription: Subscription,
        shard: int,
        epoch: int,
        *,
        lease_ttl: float,
    ) -> None:
        self.source = source
        self.subscription = subscription
        self.shard = shard
        self.epoch = epoch
        self.lease_ttl = lease_ttl
        # The next page of the window, read while the handler works on this one.
        self._ahead: tuple[Window, Handle[_Page | None]] | None = None
        # Whether the next batch calls its handler in savepoints (after a failure).
        self._careful = False
        # Where this worker left its checkpoint drained after a live batch: the next cycle
        # reads its page in the checkpoint's round trip (`AsyncSubscriptionStore.batch_cycle`).
        self._live_from: PgSnapshot | None = None
        # How many transaction ids past it that page spans (`live_xids`).
        self._live_xids = SMALL_WINDOW_XIDS

    def step(self) -> StepResult:
        """Runs one cycle; raises `FencedError` when the shard is no longer this worker's.

        A batch first calls its handler once, with no savepoint: a savepoint costs two
        round trips, and most batches succeed. When that call fails, the whole batch rolls
        back and runs again at once with the handler in savepoints, where retries and
        narrowing down to the failing event work as before.
        """
        careful = self._careful or self.subscription.side_effects
        self._careful = False
        try:
            return self._step(careful)
        except _Redo as redo:
            self._careful = True
            logger.info(
                "handler failed, running the batch again in savepoints: %s",
                redo,
                extra={"subscription": self.subscription.name, "shard": self.shard},
            )
            return StepResult(0, False)
        except PostponedError as postponed:
            error = postponed.__cause__ or postponed
            self.source.note_error(self.subscription.name, self.shard, self.epoch, _line(error))
            logger.warning(
                "batch postponed: %s",
                _line(error),
                extra={"subscription": self.subscription.name, "shard": self.shard},
            )
            return StepResult(0, False, "postponed")
        except HaltedError as halted:
            error = halted.__cause__ or halted
            self.source.halt(self.subscription.name, self.shard, self.epoch, _line(error))
            logger.error(
                "subscription shard halted",
                extra={"subscription": self.subscription.name, "shard": self.shard},
                exc_info=error,
            )
            return StepResult(0, True, "halted")

    def _step(self, careful: bool) -> StepResult:
        sub = self.subscription
        expected, self._live_from = self._live_from, None
        with self.source.batch_cycle(
            sub.connection, sub.name, self.shard, expected, self._filters(), self._live_xids
        ) as (conn, target, checkpoint):
            if checkpoint is None or checkpoint.epoch != self.epoch:
                raise FencedError(sub.name, self.shard)
            if checkpoint.status != "running":
                return StepResult(0, True, checkpoint.status)
            opened = (
                None
                if expected is None
                else self.source.live_window(checkpoint, expected, self._live_xids)
            )
            if opened is not None and checkpoint.live_page is not None:
                window, live = opened, True
                page = _Page(checkpoint.live_page[1], None)
            else:
                window, live = self.source.open_window(conn, checkpoint.window, checkpoint.now)
                page = self._page(conn, window)
            rows = page.rows
            drained = len(rows) < sub.batch_size
            moved = window.advanced(rows[-1][0]) if rows else window
            if drained:
                moved = moved.drained()
            else:
                self._ahead = (moved, spawn(self._read_ahead, moved))
            handled = self._handle(conn, target, page, checkpoint.holds_streams, careful)
            try:
                finished = moved == checkpoint.window or self.source.finish_cycle(
                    conn,
                    sub.connection,
                    sub.name,
                    self.shard,
                    self.epoch,
                    moved,
                    handled,
                    self.lease_ttl,
                )
            except DatabaseUnavailableError:
                raise
            except Exception as exc:
                # E.g. a handler that swallowed its own statement's error left the
                # transaction aborted: in savepoints, that shows as the handler's failure.
                if careful or not handled:
                    raise
                raise _Redo(_line(exc)) from exc
            if not finished:
                raise FencedError(sub.name, self.shard)
        if drained and live and sub.connection == "psycopg":
            # Caught up: the next cycle reads the window it opens with its checkpoint,
            # over a range of transaction ids sized from this window's width.
            self._live_from = moved.low
            from_xid, to_xid, extra = window.candidate_ranges()
            self._live_xids = live_xids(to_xid - from_xid + len(extra))
        return StepResult(len(rows), drained and live)

    def _page(self, conn: Any, window: Window) -> _Page:
        """Returns the window's next page: the one read ahead if it is that window's."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == window:
            page = ahead[1].join()
            if page is not None:
                return page
        return _Page(self.source.page(conn, window, **self._filters()), None)

    def _filters(self) -> dict[str, Any]:
        """Returns what selects this shard's pages (`AsyncSubscriptionStore.page`'s keywords)."""
        sub = self.subscription
        return {
            "shard": self.shard,
            "shards": sub.shards,
            "limit": sub.batch_size,
            "event_types": sub.type_names,
            "stream_prefix": sub.stream_prefix,
        }

    def _read_ahead(self, window: Window) -> _Page | None:
        """Reads and decodes the page after this batch's on a connection of its own, or
        returns None on failure.

        A page of an open window is the same whoever reads it, whenever: it holds events of
        transactions that had committed when the window's ``high`` snapshot was taken, in
        position order. So the next batch can use it if its checkpoint turns out to be at
        exactly that window (this batch committed, nobody else moved it); any failure here
        just means the next batch reads the page itself.

        Decoding it here too is what makes reading ahead pay: the batch's own writes keep
        the server busy while the client would be waiting. An event that does not decode
        is left to the batch, which parks it.
        """
        try:
            rows = self.source.read_page(window, **self._filters())
            return _Page(rows, _decoded(self.source.registry, rows))
        except Exception:
            logger.debug("reading ahead failed", exc_info=True)
            return None

    def _handle(
        self,
        conn: Any,
        target: Any,
        page: _Page,
        holds_streams: bool,
        careful: bool,
    ) -> int:
        """Handles a page: decodes, parks held and undecodable events, runs the handler."""
        rows, decoded = page
        if not rows:
            return 0
        sub = self.subscription
        held: set[str] = set()
        if holds_streams:
            held = self.source.held_streams(conn, sub.name, sorted({r[1] for r in rows}))
        events: list[RecordedEvent[Event]] = []
        for n, row in enumerate(rows):
            if row[1] in held:
                self._park(conn, _Parked(*row[:5]), "held", None)
                continue
            if decoded is not None and (event := decoded[n]) is not None:
                events.append(event)
                continue
            try:
                events.append(_rows.decode_row(self.source.registry, row))
            except _UNDECODABLE as exc:
                self._park(conn, _Parked(*row[:5]), "undecodable", exc)
                held.add(row[1])
        if careful:
            self._run(conn, target, events, held, sub.retries)
        else:
            self._call_once(target, events)
        return len(events)

    def _call_once(self, target: Any, events: list[RecordedEvent[Event]]) -> None:
        """Calls the handler once, in the batch's transaction itself (no savepoint)."""
        if not events:
            return
        batch: Batch[Any] = Batch(self.subscription.name, self.shard, tuple(events))
        try:
            with self.source.handler_target(self.subscription.connection, target) as given:
                _call_handler(self.subscription, batch, given)
        except Exception as exc:
            if self.subscription.is_transient(exc):
                raise PostponedError(_line(exc)) from exc
            raise _Redo(_line(exc)) from exc

    def _run(
        self,
        conn: Any,
        target: Any,
        events: list[RecordedEvent[Event]],
        held: set[str],
        attempts: int,
    ) -> None:
        """Handles events; on failure, halts or narrows down to the failing event and parks it."""
        if not events:
            return
        try:
            self._call(conn, target, events, attempts)
            return
        except Exception as exc:
            if self.subscription.is_transient(exc):
                raise PostponedError(_line(exc)) from exc
            if self.subscription.on_failure == "halt":
                raise HaltedError(_line(exc)) from exc
            if len(events) == 1:
                self._park(conn, _parked(events[0]), "handler_failed", exc)
                held.add(events[0].stream_id)
                return
        # Narrow down: halves are tried once each, a single event gets the full retries.
        middle = len(events) // 2
        retries = self.subscription.retries
        self._run(conn, target, events[:middle], held, 1 if middle > 1 else retries)
        rest = []
        for event in events[middle:]:
            if event.stream_id in held:
                self._park(conn, _parked(event), "held", None)
            else:
                rest.append(event)
        self._run(conn, target, rest, held, 1 if len(rest) > 1 else retries)

    def _call(
        self, conn: Any, target: Any, events: list[RecordedEvent[Event]], attempts: int
    ) -> None:
        """Calls the handler in a savepoint, retrying with backoff up to ``attempts`` times."""
        batch: Batch[Any] = Batch(self.subscription.name, self.shard, tuple(events))
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
            retry=tenacity.retry_if_exception(
                lambda exc: isinstance(exc, Exception) and not self.subscription.is_transient(exc)
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                with (
                    self.source.savepoint(conn),
                    self.source.handler_target(self.subscription.connection, target) as given,
                ):
                    _call_handler(self.subscription, batch, given)

    def _park(self, conn: Any, event: _Parked, reason: str, error: Exception | None) -> None:
        logger.warning(
            "event parked as a dead letter",
            extra={
                "subscription": self.subscription.name,
                "shard": self.shard,
                "global_position": event.position,
                "stream_id": event.stream_id,
                "reason": reason,
            },
        )
        self.source.park(
            conn,
            self.subscription.name,
            self.shard,
            (event.position, event.stream_id, event.version, event.event_id, event.event_type),
            reason,
            error,
        )


def retry_dead_letters(
    store: SubscriptionStore, subscription: Subscription, stream_id: str | None = None
) -> RetryOutcome:
    """Replays the parked events of each held stream (or one) through the handler, in order.

    Each stream is one transaction: its dead letters are handled oldest first in one
    batch (``replay`` False: they were never handled) and marked retried, which releases
    the stream; if the handler fails again, nothing changes and the stream stays held. The
    shard's checkpoint row is locked first, so a concurrent batch of the same shard never
    interleaves with the retry.
    """
    with store.transaction() as conn:
        streams = store.parked_streams(conn, subscription.name, stream_id)
    released: list[str] = []
    failed: list[str] = []
    errors: list[str] = []
    for stream in streams:
        try:
            _retry_stream(store, subscription, stream)
            released.append(stream)
        except Exception as exc:
            failed.append(stream)
            errors.append(_line(exc))
    return RetryOutcome(tuple(released), tuple(failed), tuple(errors))


def _retry_stream(store: SubscriptionStore, subscription: Subscription, stream_id: str) -> None:
    with store.batch_transaction(subscription.connection) as (conn, target):
        shard = subscription.shard_of(shard_key(stream_id))
        store.lock_checkpoint(conn, subscription.name, shard)
        letters = store.parked_of_stream(conn, subscription.name, stream_id)
        if not letters:
            return
        rows = store.read_positions(conn, [d.global_position for d in letters])
        events = tuple(_rows.decode_row(store.registry, row) for row in rows)
        # Not a replay: these events were never handled, their side effects never ran.
        batch: Batch[Any] = Batch(subscription.name, shard, events)
        with store.handler_target(subscription.connection, target) as given:
            _call_handler(subscription, batch, given)
        store.set_dead_letter_status(conn, [d.id for d in letters], "retried")


def discard_dead_letters(store: SubscriptionStore, ids: Sequence[int]) -> int:
    """Discards dead letters: their events are never handled; a stream with none left is
    released. Returns how many were discarded."""
    with store.transaction() as conn:
        return store.set_dead_letter_status(conn, ids, "discarded")


def _call_handler(subscription: Subscription, batch: Batch[Any], conn: Any) -> None:
    subscription.handler(batch, conn)


class _Redo(Exception):
    """A handler called without a savepoint failed: the batch runs again in savepoints."""


def _line(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
