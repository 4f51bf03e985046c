# Generated from subscriptions_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
# ruff: noqa: SIM117
"""The subscription engine's Postgres side: windows, checkpoints, leases and dead letters.

`subscriptions_async.py` is the source and `subscriptions.py` its generated sync twin (see
`tools/async_to_sync.py`). The engine (`eventstore.subscriptions`) decides; this module only
runs the statements of `eventstore.postgres.subscription_sql` on the connection it is given,
so a batch's reads, the handler's writes and the checkpoint share one transaction.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, Final, Self

import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import tuple_row

# Used by the generated sync module only (`X as X` keeps ruff from pruning it here).
from sqlalchemy import Engine as Engine
from sqlalchemy.orm import Session as Session

from eventstore import _append, _rows
from eventstore._acompat import Lock, sleep
from eventstore.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    InvalidArgumentError,
    ShardCountChangedError,
    SubscriptionNotFoundError,
    WaitTimeoutError,
)
from eventstore.events import Event
from eventstore.postgres import subscription_sql
from eventstore.postgres.connections import libpq_url, unwrap_connection
from eventstore.postgres.errors import translated_errors
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.postgres.scope import entered
from eventstore.registry import EventRegistry
from eventstore.settings import Settings
from eventstore.sharding import shard_key
from eventstore.store import AppendResult
from eventstore.subscriptions.records import (
    CheckpointRow,
    DeadLetter,
    LogPage,
    ShardStatus,
    TransactionInfo,
)
from eventstore.subscriptions.subscription import ConnectionKind, _type_names
from eventstore.subscriptions.window import NOTHING_SEEN, PgSnapshot, Window, covers

__all__ = ["SubscriptionStore"]

Conn = psycopg.Connection[Any]


# The widest window (in transaction ids) opened without asking where its rows start.
SMALL_WINDOW_XIDS: Final = 256
# The widest range a live worker's next page is read over with its checkpoint (`live_xids`).
LIVE_WINDOW_XIDS_MAX: Final = 4096


def live_xids(width: int) -> int:
    """Returns how many transaction ids a live worker's next page should span, after a
    drained window ``width`` ids wide: twice that, within [`SMALL_WINDOW_XIDS`,
    `LIVE_WINDOW_XIDS_MAX`].

    A worker running a batch every wake interval sees windows as wide as the transactions
    finished meanwhile: at 6,700 appends a second and 50 ms, about 340. A fixed range of
    256 ids would miss such windows every time, so each cycle would read a page only to
    drop it and then read the window again in two more round trips. Twice the last width
    keeps the range a little ahead of a steady rate, and the cap keeps the planner's view
    of the range (the bounds are constants) narrow enough for the transaction id index.
    """
    return max(SMALL_WINDOW_XIDS, min(LIVE_WINDOW_XIDS_MAX, 2 * width))


class SubscriptionStore:
    """Keeps subscriptions' checkpoints, leases and dead letters, and reads their windows.

    Runners use it to read and move checkpoints; applications use it to wait for a
    subscription to catch up with their own append (`wait_for`), and operators to see and
    steer subscriptions (`status`, `pause`, `resume`, `reset`, `dead_letters`). It has a
    connection pool of its own.

    Args:
        url: The database (``postgresql://`` or ``postgresql+psycopg://``); default
            ``EVENTSTORE_DATABASE_URL``, then ``DATABASE_URL``.
        registry: Decodes the events it reads (`read_all`, handlers' batches).
        schema: The event store's schema.
        max_size: Most connections its pool opens (it keeps one open).
        connect_timeout: Seconds to wait for a first connection when the pool opens, and
            for a free one after; libpq's ``connect_timeout`` too (rounded up).
        engine: A SQLAlchemy engine (``postgresql+psycopg://``) for handlers that ask for
            a SQLAlchemy connection or session; the batch's transaction runs on one of its
            connections then.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        registry: EventRegistry,
        schema: str = DEFAULT_SCHEMA,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        engine: Engine | None = None,
    ) -> None:
        url = url or Settings.from_env().database_url
        if url is None:
            raise ConfigurationError(
                "no database configured: pass a URL or set EVENTSTORE_DATABASE_URL"
            )
        self._url = libpq_url(url)
        self.registry = registry
        self.schema = schema
        self._sql = subscription_sql.render(_append.validate_schema(schema))
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._pool: psycopg_pool.ConnectionPool[Any] | None = None
        self._lock = Lock()
        self._engine = engine

    def open(self) -> None:
        """Opens the pool, waiting for a first connection; idempotent."""
        if self._pool is not None:
            return
        with self._lock:
            if self._pool is None:
                self._pool = self._open_pool()

    def _open_pool(self) -> psycopg_pool.ConnectionPool[Any]:
        pool = psycopg_pool.ConnectionPool(
            self._url,
            min_size=1,
            max_size=self._max_size,
            open=False,
            timeout=self._connect_timeout,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, math.ceil(self._connect_timeout)),
            },
        )
        try:
            with translated_errors():
                pool.open(wait=True, timeout=self._connect_timeout)
        except BaseException:
            pool.close()
            raise
        return pool

    def close(self) -> None:
        """Closes the pool."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Conn]:
        """Yields a pooled connection inside a transaction that commits on success."""
        with self._pooled() as conn, entered(conn.transaction()):
            yield conn

    @contextmanager
    def batch_transaction(self, kind: ConnectionKind) -> Iterator[tuple[Conn, Any]]:
        """Yields a batch's transaction: the psycopg connection and what the handler gets.

        ``kind`` ``"psycopg"`` gives the handler the psycopg connection itself;
        ``"sqlalchemy"`` and ``"session"`` open the transaction through the SQLAlchemy
        engine given to the store, and the handler gets its connection (or a session bound
        to it, see `handler_target`), running in the same transaction as the checkpoint.
        """
        if kind == "psycopg":
            with self.transaction() as conn:
                yield conn, conn
            return
        if self._engine is None:
            raise ConfigurationError(
                f"a subscription with connection={kind!r} needs a SQLAlchemy engine: pass "
                "engine= to the runner (an AsyncEngine for async handlers, an Engine for "
                "plain ones, on a 'postgresql+psycopg://' URL)"
            )
        with entered(self._engine.connect()) as sa_conn, entered(sa_conn.begin()):
            yield unwrap_connection(sa_conn), sa_conn

    @staticmethod
    def live_window(
        checkpoint: CheckpointRow, expected_low: PgSnapshot, xids: int = SMALL_WINDOW_XIDS
    ) -> Window | None:
        """Returns the window whose first page `checkpoint.live_page` holds, or None when that
        page cannot be used: the checkpoint is not drained at ``expected_low`` (another runner
        or a reset moved it), the snapshot is older than it (a restored database: the usual
        path raises), or the window is wider than the page's range of ``xids`` transaction
        ids (the ``live_xids`` it was read with; the usual path asks where its rows start
        first)."""
        window = checkpoint.window
        if checkpoint.live_page is None or window.high is not None or window.low != expected_low:
            return None
        high = checkpoint.live_page[0]
        if high.xmax < window.low.xmax:
            return None
        opened = window.open(high)
        from_xid, to_xid, extra = opened.candidate_ranges()
        if to_xid - from_xid + len(extra) > xids:
            return None
        return opened

    @contextmanager
    def batch_cycle(
        self,
        kind: ConnectionKind,
        name: str,
        shard: int,
        live_from: PgSnapshot | None = None,
        filters: Mapping[str, Any] | None = None,
        live_xids: int = SMALL_WINDOW_XIDS,
    ) -> Iterator[tuple[Conn, Any, CheckpointRow | None]]:
        """Yields a batch's transaction (as `batch_transaction`) and the shard's checkpoint
        read in it.

        With ``kind`` ``"psycopg"`` the ``BEGIN`` travels with the checkpoint's read in one
        round trip (pipeline mode), and `finish_cycle` sends the checkpoint's move with the
        ``COMMIT``; a block that does not finish commits when it ends and rolls back when it
        raises. The handler itself never runs in pipeline mode here.

        A live worker, which expects its checkpoint drained at ``live_from``, also gets in
        that round trip the first page of the window it would open next (`LIVE_PAGE`, with
        ``filters``, `page`'s keywords), as the checkpoint's ``live_page``: the caller uses
        it only if the checkpoint is what it expected and the window no wider than the
        page's ``live_xids`` transaction ids (see `live_window` and `live_xids`).
        """
        if kind != "psycopg":
            with self.batch_transaction(kind) as (conn, target):
                yield conn, target, self.load_checkpoint(conn, name, shard)
            return
        with self._pooled() as conn:
            try:
                with translated_errors():
                    with conn.pipeline():
                        conn.execute(b"BEGIN", prepare=False)
                        cur = conn.cursor(row_factory=tuple_row)
                        cur.execute(self._sql.load_checkpoint, {"name": name, "shard": shard})
                        if live_from is not None:
                            ahead = conn.cursor(row_factory=tuple_row)
                            params = _live_params(live_from, live_xids, **(filters or {}))
                            ahead.execute(self._sql.live_page, params, prepare=False)
                    rows = cur.fetchall()
                    live = None if live_from is None else _live_page(ahead.fetchall())
                yield conn, conn, _checkpoint_row(rows, live)
            except BaseException:
                _rolled_back(conn)
                raise
            if conn.info.transaction_status != _IDLE:
                with translated_errors():
                    conn.commit()

    def finish_cycle(
        self,
        conn: Conn,
        kind: ConnectionKind,
        name: str,
        shard: int,
        epoch: int,
        window: Window,
        handled: int,
        ttl: float,
    ) -> bool:
        """Moves the checkpoint as `save_checkpoint` does and, for a ``"psycopg"`` batch,
        commits in the same round trip; returns False (rolled back) when fenced."""
        if kind != "psycopg":
            return self.save_checkpoint(conn, name, shard, epoch, window, handled, ttl)
        params = _checkpoint_params(name, shard, epoch, window, handled, ttl)
        with translated_errors():
            try:
                with conn.pipeline():
                    conn.execute(self._sql.finish_cycle, params)
                    conn.execute(b"COMMIT", prepare=False)
            except psycopg.errors.DivisionByZero:  # the fence: no row moved, nothing committed
                _rolled_back(conn)
                return False
        return True

    @contextmanager
    def handler_target(self, kind: ConnectionKind, conn: Any) -> Iterator[Any]:
        """Yields what one handler call gets: the connection, or a new session bound to it.

        A session is flushed after the handler returns, so its changes are written before
        the checkpoint moves, and closed, which leaves the batch's transaction alone.
        """
        if kind != "session":
            yield conn
            return
        session = Session(bind=conn, expire_on_commit=False)
        try:
            yield session
            session.flush()
        finally:
            session.close()

    @contextmanager
    def savepoint(self, conn: Conn) -> Iterator[None]:
        """Runs a block in a savepoint: its writes go when it raises, the batch carries on."""
        with entered(conn.transaction()):
            yield

    def _fetch(
        self, conn: Conn, query: bytes, params: Mapping[str, Any], prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        with translated_errors():
            with conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(query, params, prepare=prepare)
                return cur.fetchall() if cur.description is not None else []

    def _one(self, conn: Conn, query: bytes, params: Mapping[str, Any]) -> Any:
        rows = self._fetch(conn, query, params)
        return rows[0][0] if rows else None

    # Windows.

    def current_snapshot(self, conn: Conn) -> PgSnapshot:
        """Returns the snapshot of transactions finished now."""
        return PgSnapshot.parse(self._one(conn, self._sql.current_snapshot, {}))

    def open_window(
        self, conn: Conn, window: Window, now: PgSnapshot | None = None
    ) -> tuple[Window, bool]:
        """Opens the next window up to ``now`` (default: a snapshot taken here).

        The window starts at a lower bound of its rows' positions, so that reading it by
        position never walks the rows before it. A window of at most `SMALL_WINDOW_XIDS`
        transaction ids (a live runner's, every few milliseconds) skips that query: its
        pages are read through the transaction id index whatever their start. Returns the
        window and whether it was newly opened (so it reaches "now").
        """
        if window.is_open:
            return window, False
        opened = window.open(now or self.current_snapshot(conn))
        from_xid, to_xid, extra = opened.candidate_ranges()
        if to_xid - from_xid + len(extra) <= SMALL_WINDOW_XIDS:
            return opened, True
        params = {
            "from_xid": str(from_xid),
            "to_xid": str(to_xid),
            "extra_xids": [str(x) for x in extra],
        }
        first = self._one(conn, self._sql.window_start, params)
        return (opened if first is None else opened.advanced(int(first) - 1)), True

    def page(
        self,
        conn: Conn,
        window: Window,
        *,
        shard: int,
        shards: int,
        limit: int,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
    ) -> list[_rows.RawRow]:
        """Returns the next rows of the window after its position, in position order."""
        from_xid, to_xid, extra = window.candidate_ranges()
        if to_xid <= from_xid and not extra:
            return []  # no transaction finished since the last window: nothing to ask
        params = _page_params(
            from_xid,
            to_xid,
            extra,
            shard=shard,
            shards=shards,
            limit=limit,
            event_types=event_types,
            stream_prefix=stream_prefix,
        )
        params.update(high=str(window.high), after=window.position)
        # Planned for these values each time (no prepared generic plan): a window of a few
        # transactions is best read through the transaction id index, one of a million
        # rows (catching up) by walking positions from its start.
        return self._fetch(conn, self._sql.window_page, params, prepare=False)

    def read_page(self, window: Window, **filters: Any) -> list[_rows.RawRow]:
        """Returns a page of an open window on a pooled connection of its own (no
        transaction); ``filters`` are `page`'s keywords."""
        self.open()
        assert self._pool is not None
        with entered(self._pool.connection()) as conn:
            return self.page(conn, window, **filters)

    def read_all(
        self,
        after: str | None = None,
        *,
        batch_size: int = 1000,
        event_types: Sequence[str | type[Event]] | None = None,
        stream_prefix: str | None = None,
    ) -> Iterator[LogPage]:
        """Yields every committed event once, in commit-consistent order, page by page.

        Each page carries a token: pass it as ``after`` to resume exactly after that page
        (tokens are plain strings, safe to store). The last page (possibly empty) has
        ``caught_up`` True: everything committed when it was read has been yielded. Filters
        are applied in SQL; a filter that matches nothing still moves the token on.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgumentError("batch_size must be an int >= 1")
        types = None if event_types is None else _type_names(event_types)
        window = Window() if after is None else Window.from_token(after)
        while True:
            with self.transaction() as conn:
                window, live = self.open_window(conn, window)
                rows = self.page(
                    conn,
                    window,
                    shard=0,
                    shards=1,
                    limit=batch_size,
                    event_types=types,
                    stream_prefix=stream_prefix,
                )
            events = tuple(_rows.decode_row(self.registry, row) for row in rows)
            drained = len(rows) < batch_size
            window = window.advanced(rows[-1][0]) if rows else window
            window = window.drained() if drained else window
            if rows or (drained and live):
                yield LogPage(events, window.to_token(), drained and live)
            if drained and live:
                return

    # Checkpoints and leases.

    def ensure_checkpoints(self, name: str, shards: int, start_at_end: bool) -> None:
        """Creates a subscription's checkpoint rows, or checks the shard count they have."""
        with self.transaction() as conn:
            counts = [r[0] for r in self._fetch(conn, self._sql.shard_counts, {"name": name})]
            if counts and counts != [shards]:
                raise ShardCountChangedError(name, max(counts), shards)
            if counts:
                return
            low = self.current_snapshot(conn) if start_at_end else NOTHING_SEEN
            params = {"name": name, "shards": shards, "low": str(low)}
            self._fetch(conn, self._sql.create_checkpoints, params)

    def heartbeat(self, name: str, runner: str, ttl: float) -> int:
        """Records this runner as alive; returns how many runners (itself included) are."""
        with self.transaction() as conn:
            params = {"name": name, "runner": runner, "ttl": ttl}
            return int(self._one(conn, self._sql.heartbeat, params))

    def leave(self, name: str, runner: str) -> None:
        """Removes this runner from the subscription's live runners."""
        with self.transaction() as conn:
            self._fetch(conn, self._sql.leave, {"name": name, "runner": runner})

    def renew_leases(
        self, name: str, runner: str, ttl: float, shards: Sequence[int]
    ) -> dict[int, int]:
        """Renews the leases of ``shards``; returns ``{shard: epoch}`` of those still held."""
        with self.transaction() as conn:
            params = {"name": name, "runner": runner, "ttl": ttl, "shards": list(shards)}
            return dict(self._fetch(conn, self._sql.renew_leases, params))

    def claim_shards(
        self, name: str, runner: str, ttl: float, count: int, mine: Sequence[int] = ()
    ) -> dict[int, int]:
        """Takes up to ``count`` free shards (``mine`` are those it works on already)."""
        if count < 1:
            return {}
        with self.transaction() as conn:
            params = {
                "name": name,
                "runner": runner,
                "ttl": ttl,
                "count": count,
                "mine": list(mine),
            }
            return dict(self._fetch(conn, self._sql.claim_shards, params))

    def release_shard(self, name: str, shard: int, epoch: int) -> None:
        """Gives a shard up (only if this epoch still holds it)."""
        with self.transaction() as conn:
            params = {"name": name, "shard": shard, "epoch": epoch}
            self._fetch(conn, self._sql.release_shard, params)

    def load_checkpoint(self, conn: Conn, name: str, shard: int) -> CheckpointRow | None:
        """Returns a shard's checkpoint, or None when the subscription has none."""
        rows = self._fetch(conn, self._sql.load_checkpoint, {"name": name, "shard": shard})
        return _checkpoint_row(rows)

    def save_checkpoint(
        self,
        conn: Conn,
        name: str,
        shard: int,
        epoch: int,
        window: Window,
        handled: int,
        ttl: float,
    ) -> bool:
        """Moves the checkpoint if ``epoch`` still holds the shard and it runs; tells if so."""
        params = _checkpoint_params(name, shard, epoch, window, handled, ttl)
        return bool(self._fetch(conn, self._sql.save_checkpoint, params))

    def halt(self, name: str, shard: int, epoch: int, error: str) -> None:
        """Halts a shard after a failure, keeping the error for `status`."""
        with self.transaction() as conn:
            params = {"name": name, "shard": shard, "epoch": epoch, "error": error}
            self._fetch(conn, self._sql.halt_shard, params)

    def note_error(self, name: str, shard: int, epoch: int, error: str) -> None:
        """Records why a shard's batch was postponed, for `status` (until a batch succeeds)."""
        with self.transaction() as conn:
            params = {"name": name, "shard": shard, "epoch": epoch, "error": error}
            self._fetch(conn, self._sql.note_error, params)

    def set_status(self, name: str, status: str) -> list[int]:
        """Sets every shard of a subscription to running or paused; returns the shards."""
        with self.transaction() as conn:
            params = {"name": name, "status": status}
            return [r[0] for r in self._fetch(conn, self._sql.set_status, params)]

    def reset(self, name: str, to_end: bool) -> list[int]:
        """Moves every shard back to the start of the log, or to its end."""
        with self.transaction() as conn:
            low = self.current_snapshot(conn) if to_end else NOTHING_SEEN
            params = {"name": name, "low": str(low)}
            return [r[0] for r in self._fetch(conn, self._sql.reset, params)]

    def lows(self, name: str) -> dict[int, PgSnapshot]:
        """Returns each shard's low snapshot: what it has handled for sure."""
        with self._pooled() as conn:  # one statement: waits poll it often
            rows = self._fetch(conn, self._sql.lows, {"name": name})
        return {shard: PgSnapshot.parse(low) for shard, low in rows}

    def snapshot_text(self) -> str:
        """Returns the current snapshot's text form: a change means a transaction finished.

        One statement in autocommit (no transaction around it): runners ask every 50 ms.
        """
        with self._pooled() as conn:
            return str(self._one(conn, self._sql.current_snapshot, {}))

    def snapshot_now(self) -> PgSnapshot:
        """Returns the current snapshot, on a connection of its own."""
        with self._pooled() as conn:
            return self.current_snapshot(conn)

    @contextmanager
    def _pooled(self) -> Iterator[Conn]:
        """Yields a pooled connection (in autocommit); after the database was unavailable,
        drops every dead connection of the pool."""
        self.open()
        assert self._pool is not None
        try:
            with entered(self._pool.connection()) as conn:
                yield conn
        except DatabaseUnavailableError:
            self._pool.check()  # after a restart, drop every dead pooled connection
            raise

    # Dead letters.

    def held_streams(self, conn: Conn, name: str, stream_ids: Sequence[str]) -> set[str]:
        """Returns which of these streams have parked events (and so are held)."""
        params = {"name": name, "stream_ids": list(stream_ids)}
        return {r[0] for r in self._fetch(conn, self._sql.held_streams, params)}

    def park(
        self,
        conn: Conn,
        name: str,
        shard: int,
        row: _rows.RawRow,
        reason: str,
        error: BaseException | None,
    ) -> None:
        """Records a dead letter for a stored event row."""
        params = {
            "name": name,
            "shard": shard,
            "position": row[0],
            "stream_id": row[1],
            "version": row[2],
            "event_id": row[3],
            "event_type": row[4],
            "reason": reason,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "traceback": None if error is None else "".join(traceback.format_exception(error)),
        }
        self._fetch(conn, self._sql.park, params)

    def dead_letters(
        self, name: str, *, status: str | None = "parked", limit: int = 1000
    ) -> list[DeadLetter]:
        """Lists a subscription's dead letters, oldest first."""
        with self.transaction() as conn:
            params = {"name": name, "status": status, "limit": limit}
            rows = self._fetch(conn, self._sql.list_dead_letters, params)
        return [DeadLetter(*row) for row in rows]

    def parked_streams(self, conn: Conn, name: str, stream_id: str | None) -> list[str]:
        """Returns the held streams (or just ``stream_id``), oldest dead letter first."""
        params = {"name": name, "stream_id": stream_id}
        return [r[0] for r in self._fetch(conn, self._sql.parked_streams, params)]

    def parked_of_stream(self, conn: Conn, name: str, stream_id: str) -> list[DeadLetter]:
        """Locks and returns one held stream's dead letters, in position order."""
        params = {"name": name, "stream_id": stream_id}
        return [DeadLetter(*r) for r in self._fetch(conn, self._sql.parked_of_stream, params)]

    def read_positions(self, conn: Conn, positions: Sequence[int]) -> list[_rows.RawRow]:
        """Returns the stored rows at these positions, in position order."""
        params = {"positions": list(positions)}
        return self._fetch(conn, self._sql.read_positions, params)

    def set_dead_letter_status(self, conn: Conn, ids: Sequence[int], status: str) -> int:
        """Marks parked dead letters retried or discarded; returns how many changed."""
        params = {"ids": list(ids), "status": status}
        return len(self._fetch(conn, self._sql.set_dead_letter_status, params))

    def lock_checkpoint(self, conn: Conn, name: str, shard: int) -> None:
        """Locks a shard's checkpoint row until the transaction ends."""
        self._fetch(conn, self._sql.lock_checkpoint, {"name": name, "shard": shard})

    def notifications(self, channel: str) -> Iterator[str]:
        """Yields the payload of every notification on ``channel``, on a connection of its own.

        Ends (or raises `DatabaseUnavailableError`) when the connection is lost; the caller
        reconnects and keeps polling meanwhile.
        """
        with translated_errors():
            conn = psycopg.Connection.connect(
                self._url, autocommit=True, connect_timeout=max(1, math.ceil(self._connect_timeout))
            )
        with conn:
            with translated_errors():
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                for notify in conn.notifies():
                    yield notify.payload

    # Waiting.

    def wait_for(
        self,
        name: str,
        result: AppendResult,
        *,
        timeout: float = 10.0,
        poll_interval: float = 0.02,
    ) -> None:
        """Returns once subscription ``name`` has handled the append ``result``.

        Sound although positions commit out of order: it waits until the append's
        transaction is visible in the ``low`` snapshot of the shard that reads its stream,
        i.e. until every event of that transaction has been handled (or parked).
        """
        deadline = time.monotonic() + timeout
        while True:
            lows = self.lows(name)
            if lows and lows[shard_key(result.stream_id) % len(lows)].visible(
                result.transaction_id
            ):
                return
            _pause(name, deadline, timeout, poll_interval, bool(lows))

    def wait_until_caught_up(
        self,
        name: str,
        *,
        timeout: float = 10.0,
        poll_interval: float = 0.02,
    ) -> None:
        """Returns once every shard of ``name`` has handled everything committed before the call.

        The deterministic "caught up" for tests: no sleeping, no guessing.
        """
        target = self.snapshot_now()
        deadline = time.monotonic() + timeout
        while True:
            lows = self.lows(name)
            if lows and all(covers(low, target) for low in lows.values()):
                return
            _pause(name, deadline, timeout, poll_interval, bool(lows))

    # Status.

    def status(self, name: str | None = None) -> list[ShardStatus]:
        """Returns every shard's status, with its lag, of one subscription or all."""
        with self.transaction() as conn:
            rows = self._fetch(conn, self._sql.status, {"name": name})
            return [self._shard_status(conn, row) for row in rows]

    def _shard_status(self, conn: Conn, row: tuple[Any, ...]) -> ShardStatus:
        name, shard, shards, status, owner, lease_until, live, epoch, handled = row[:9]
        low, _high, position, last_error, updated_at, window_age, dead = row[9:]
        low_snapshot = PgSnapshot.parse(low)
        params = {
            "from_xid": str(low_snapshot.xmax),
            "extra_xids": [str(x) for x in low_snapshot.xip],
            "shard": shard,
            "shards": shards,
        }
        lag_rows = self._fetch(conn, self._sql.lag, params)
        lag_events, oldest = lag_rows[0]
        return ShardStatus(
            name=name,
            shard=shard,
            shards=shards,
            status=status,
            owner=owner if live else None,
            lease_until=lease_until,
            epoch=epoch,
            handled=handled,
            lag_events=lag_events,
            oldest_unhandled_at=oldest,
            window_age=window_age,
            position=position,
            last_error=last_error,
            updated_at=updated_at,
            dead_letters=dead,
        )

    def oldest_transaction(self) -> TransactionInfo | None:
        """Returns the oldest open transaction that has written (it holds windows back)."""
        with self.transaction() as conn:
            rows = self._fetch(conn, self._sql.oldest_transaction, {})
        return TransactionInfo(*rows[0]) if rows else None


def _pause(name: str, deadline: float, timeout: float, interval: float, exists: bool) -> None:
    """Waits before the next poll; at the deadline, raises (not found, or not caught up)."""
    if time.monotonic() >= deadline:
        if not exists:  # a subscription not started yet gets the whole timeout to appear
            raise SubscriptionNotFoundError(name)
        raise WaitTimeoutError(name, timeout)
    sleep(interval)


_IDLE: Final = psycopg.pq.TransactionStatus.IDLE


def _checkpoint_row(
    rows: Sequence[tuple[Any, ...]], live: tuple[PgSnapshot, list[Any]] | None = None
) -> CheckpointRow | None:
    """Builds a checkpoint from `load_checkpoint`'s rows (None: the subscription has none)."""
    if not rows:
        return None
    low, high, position, status, epoch, holds, now = rows[0]
    window = Window(
        PgSnapshot.parse(low), None if high is None else PgSnapshot.parse(high), position
    )
    return CheckpointRow(window, status, epoch, holds, PgSnapshot.parse(now), live)


def _page_params(
    from_xid: int,
    to_xid: int,
    extra: Sequence[int],
    *,
    shard: int,
    shards: int,
    limit: int,
    event_types: Sequence[str] | None = None,
    stream_prefix: str | None = None,
) -> dict[str, Any]:
    """Returns the parameters `WINDOW_PAGE` and `LIVE_PAGE` share: the transaction id
    ranges and the shard's filters."""
    return {
        "from_xid": str(from_xid),
        "to_xid": str(to_xid),
        "extra_xids": [str(x) for x in extra],
        "shard": shard,
        "shards": shards,
        "types": None if event_types is None else list(event_types),
        "prefix": stream_prefix,
        "limit": limit,
    }


def _live_params(low: PgSnapshot, xids: int, **filters: Any) -> dict[str, Any]:
    """Returns `LIVE_PAGE`'s parameters for the window a drained checkpoint at ``low`` opens,
    up to ``xids`` transaction ids past its xmax."""
    return _page_params(low.xmax, low.xmax + xids, low.xip, **filters)


def _live_page(rows: list[tuple[Any, ...]]) -> tuple[PgSnapshot, list[Any]] | None:
    """Splits `LIVE_PAGE`'s rows into its snapshot and the page's rows."""
    if not rows:
        return None
    return PgSnapshot.parse(rows[0][0]), [row[1:] for row in rows if row[1] is not None]


def _checkpoint_params(
    name: str, shard: int, epoch: int, window: Window, handled: int, ttl: float
) -> dict[str, Any]:
    """Returns the parameters of a checkpoint's move (`save_checkpoint`, `finish_cycle`)."""
    return {
        "name": name,
        "shard": shard,
        "epoch": epoch,
        "low": str(window.low),
        "high": None if window.high is None else str(window.high),
        "position": window.position,
        "handled": handled,
        "ttl": ttl,
    }


def _rolled_back(conn: Conn) -> None:
    """Rolls back what a batch left open; a broken connection is the pool's to drop.

    psycopg's own rollback, which also forgets the statements it prepared meanwhile.
    """
    if conn.closed or conn.info.transaction_status == _IDLE:
        return
    with suppress(psycopg.Error, OSError):
        conn.rollback()
