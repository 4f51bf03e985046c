"""Subscriptions in one process: handlers, filters, failure policies, waits, status, read_all."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.orm import Session

from eventstore import (
    ConfigurationError,
    DatabaseUnavailableError,
    Event,
    EventRegistry,
    InvalidArgumentError,
    PostgresEventStore,
    ShardCountChangedError,
    SubscriptionNotFoundError,
    WaitTimeoutError,
)
from eventstore.subscriptions import (
    AsyncSubscriptionStore,
    Batch,
    RetryLater,
    Subscription,
    SubscriptionRunner,
    SubscriptionStore,
    retry_dead_letters,
)


class Credited(Event):
    event_type: ClassVar[str] = "sub.Credited"
    amount: int


class Noted(Event):
    event_type: ClassVar[str] = "sub.Noted"
    text: str


REGISTRY = EventRegistry([Credited, Noted])


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return REGISTRY


@pytest.fixture
def url(eventstore_database_url: str) -> str:
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE seen (name text, position bigint, stream_id text, version bigint, "
            "seq bigserial, replay boolean, PRIMARY KEY (name, position))"
        )
    return eventstore_database_url


def recorder(name: str, fail_on: Callable[[Any], bool] = lambda e: False) -> Any:
    """Returns a sync handler that records events into `seen`, raising where told."""

    def handle(batch: Batch[Any], conn: psycopg.Connection[Any]) -> None:
        for event in batch.events:
            if fail_on(event):
                raise RuntimeError(f"poison at {event.stream_id}@{event.version}")
            conn.execute(
                "INSERT INTO seen (name, position, stream_id, version, replay) "
                "VALUES (%s, %s, %s, %s, %s)",
                (name, event.global_position, event.stream_id, event.version, batch.replay),
            )

    return handle


def seen(url: str, name: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT stream_id, version FROM seen WHERE name = %s ORDER BY seq", (name,)
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


@contextlib.asynccontextmanager
async def running(
    url: str, *subs: Subscription, **options: Any
) -> AsyncIterator[AsyncSubscriptionStore]:
    """Runs a runner in this event loop; yields a subscription store to wait and look with."""
    runner = SubscriptionRunner(
        subs, registry=REGISTRY, url=url, lease_ttl=3, poll_interval=0.1, **options
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
            yield store
    finally:
        stop.set()
        await task


def append_many(url: str, streams: int, per_stream: int) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        for n in range(per_stream):
            for s in range(streams):
                store.append(f"acct-{s}", Credited(amount=n))


async def test_every_event_is_handled_once_in_stream_order_across_shards(url: str) -> None:
    append_many(url, streams=10, per_stream=30)
    sub = Subscription("ledger", recorder("ledger"), shards=3, batch_size=40)
    async with running(url, sub) as store:
        await store.wait_until_caught_up("ledger", timeout=20)
    handled = seen(url, "ledger")
    assert sorted(handled) == sorted((f"acct-{s}", v) for s in range(10) for v in range(1, 31))
    for s in range(10):
        versions = [v for stream, v in handled if stream == f"acct-{s}"]
        assert versions == list(range(1, 31))


async def test_an_async_handler_gets_the_async_connection_of_the_batch(url: str) -> None:
    append_many(url, streams=2, per_stream=5)

    async def handle(batch: Batch[Any], conn: psycopg.AsyncConnection[Any]) -> None:
        for event in batch.events:
            await conn.execute(
                "INSERT INTO seen (name, position, stream_id, version, replay) "
                "VALUES ('async', %s, %s, %s, false)",
                (event.global_position, event.stream_id, event.version),
            )

    async with running(url, Subscription("async", handle)) as store:
        await store.wait_until_caught_up("async", timeout=20)
    assert len(seen(url, "async")) == 10


async def test_handlers_get_a_sqlalchemy_session_or_connection_in_the_batch_transaction(
    url: str,
) -> None:
    append_many(url, streams=2, per_stream=3)
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = sa.create_engine(sa_url)
    async_engine = create_async_engine(sa_url)
    insert = sa.text(
        "INSERT INTO seen (name, position, stream_id, version, replay) "
        "VALUES (:name, :position, :stream_id, :version, false)"
    )

    def with_session(batch: Batch[Any], session: Session) -> None:
        for e in batch.events:
            session.execute(insert, {"name": "session", "position": e.global_position,
                                     "stream_id": e.stream_id, "version": e.version})  # fmt: skip

    async def with_connection(batch: Batch[Any], conn: AsyncConnection) -> None:
        for e in batch.events:
            params = {"position": e.global_position, "stream_id": e.stream_id}
            await conn.execute(insert, {"name": "sa", "version": e.version, **params})

    subs = [
        Subscription("session", with_session, connection="session"),
        Subscription("sa", with_connection, connection="sqlalchemy"),
    ]
    try:
        async with running(url, *subs, engine=engine, async_engine=async_engine) as store:
            for sub in subs:
                await store.wait_until_caught_up(sub.name, timeout=20)
    finally:
        engine.dispose()
        await async_engine.dispose()
    assert len(seen(url, "session")) == 6
    assert len(seen(url, "sa")) == 6


async def test_a_sqlalchemy_subscription_without_an_engine_is_a_configuration_error(
    url: str,
) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as events:
        events.append("acct-1", Credited(amount=1))
    with SubscriptionStore(url, registry=REGISTRY) as store:
        sub = Subscription("no-engine", recorder("x"), connection="session")
        with (
            pytest.raises(ConfigurationError, match="engine"),
            store.batch_transaction(sub.connection),
        ):
            pass


async def test_filters_skip_in_sql_and_still_advance(url: str) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        store.append("acct-1", [Credited(amount=1), Noted(text="x")])
        store.append("note-1", Noted(text="y"))
        result = store.append("acct-2", Noted(text="z"))
    subs = [
        Subscription("credits", recorder("credits"), event_types=[Credited]),
        Subscription("accounts", recorder("accounts"), stream_prefix="acct-"),
        Subscription("nothing", recorder("nothing"), event_types=["sub.Unknown"]),
    ]
    async with running(url, *subs) as store:
        for sub in subs:
            await store.wait_for(sub.name, result, timeout=20)
    assert seen(url, "credits") == [("acct-1", 1)]
    assert seen(url, "accounts") == [("acct-1", 1), ("acct-1", 2), ("acct-2", 1)]
    assert seen(url, "nothing") == []


async def test_park_holds_the_poisoned_stream_and_a_retry_releases_it_in_order(url: str) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        for n in range(1, 6):
            store.append("bad-1", Credited(amount=n))
            store.append("good-1", Credited(amount=n))
        last = store.append("good-1", Credited(amount=6))
    poisoned = {"on": True}
    sub = Subscription(
        "parky",
        recorder("parky", lambda e: poisoned["on"] and e.stream_id == "bad-1" and e.version == 3),
        batch_size=4,
        retries=2,
    )
    async with running(url, sub) as store:
        await store.wait_for("parky", last, timeout=20)
        await store.wait_until_caught_up("parky", timeout=20)
        letters = await store.dead_letters("parky")
    assert [(d.stream_id, d.version, d.reason) for d in letters] == [
        ("bad-1", 3, "handler_failed"),
        ("bad-1", 4, "held"),
        ("bad-1", 5, "held"),
    ]
    assert "poison at bad-1@3" in (letters[0].error or "")
    assert "RuntimeError" in (letters[0].traceback or "")
    assert [v for s, v in seen(url, "parky") if s == "good-1"] == [1, 2, 3, 4, 5, 6]
    assert [v for s, v in seen(url, "parky") if s == "bad-1"] == [1, 2]
    poisoned["on"] = False
    with SubscriptionStore(url, registry=REGISTRY) as sync_store:
        outcome = retry_dead_letters(sync_store, sub)
        assert outcome.released == ("bad-1",)
        assert sync_store.dead_letters("parky") == []
    assert [v for s, v in seen(url, "parky") if s == "bad-1"] == [1, 2, 3, 4, 5]


async def test_an_unavailable_dependency_postpones_the_batch_and_parks_nothing(url: str) -> None:
    append_many(url, streams=2, per_stream=3)
    calls = {"n": 0}
    record = recorder("later")

    def flaky(batch: Batch[Any], conn: psycopg.Connection[Any]) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RetryLater("broker down")
        record(batch, conn)

    async with running(url, Subscription("later", flaky)) as store:
        errors: list[str | None] = []
        for _ in range(400):
            errors = [s.last_error for s in await store.status("later")]
            if any(errors):
                break
            await asyncio.sleep(0.01)  # polling the status, with a deadline
        assert errors == ["RetryLater: broker down"]
        await store.wait_until_caught_up("later", timeout=20)
        assert await store.dead_letters("later") == []
        (status,) = await store.status("later")
    assert status.last_error is None
    assert len(seen(url, "later")) == 6


async def test_halt_stops_only_the_failing_shard_and_says_why(url: str) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        store.append("x-1", Credited(amount=1))
    halting = Subscription("halty", recorder("halty", lambda e: True), on_failure="halt", retries=1)
    fine = Subscription("fine", recorder("fine"))
    async with running(url, halting, fine) as store:
        await store.wait_until_caught_up("fine", timeout=20)
        for _ in range(200):
            (status,) = await store.status("halty")
            if status.status == "halted":
                break
            await asyncio.sleep(0.05)
        assert status.status == "halted"
        assert "RuntimeError: poison at x-1@1" in (status.last_error or "")
        with pytest.raises(WaitTimeoutError):
            await store.wait_until_caught_up("halty", timeout=0.5)
    assert seen(url, "halty") == []
    assert seen(url, "fine") == [("x-1", 1)]


async def test_an_unknown_event_type_in_the_log_is_a_dead_letter_not_a_crash_loop(
    url: str,
) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        store.append("m-1", Credited(amount=1))
        with psycopg.connect(url) as conn:  # a type no code knows any more, by hand
            conn.execute("SET LOCAL eventstore.allow_rewrite = 'on'")
            conn.execute(
                "UPDATE eventstore.events SET event_type = 'sub.Vanished' WHERE version = 1"
            )
        last = store.append("m-1", Credited(amount=2))
        other = store.append("m-2", Credited(amount=1))
    async with running(url, Subscription("unknown", recorder("unknown"))) as store:
        await store.wait_for("unknown", last, timeout=20)
        await store.wait_for("unknown", other, timeout=20)
        letters = await store.dead_letters("unknown")
    assert [(d.version, d.reason) for d in letters] == [(1, "undecodable"), (2, "held")]
    assert "sub.Vanished" in (letters[0].error or "")
    assert seen(url, "unknown") == [("m-2", 1)]


async def test_a_changed_shard_count_is_refused(url: str) -> None:
    async with running(url, Subscription("counted", recorder("counted"), shards=2)):
        pass
    runner = SubscriptionRunner(
        [Subscription("counted", recorder("counted"), shards=3)], registry=REGISTRY, url=url
    )
    with pytest.raises(ShardCountChangedError) as caught:
        await runner.run(asyncio.Event())
    assert (caught.value.stored, caught.value.configured) == (2, 3)
    assert isinstance(caught.value, ConfigurationError)
    # A start that fails closes the pools it opened: left open, their tasks kept the
    # process of `eventstore subscriptions run` from exiting.
    assert runner.store._pool is None


async def test_a_database_lost_while_starting_is_waited_for(url: str) -> None:
    """The pool opened, then the database went away (a restart) before the checkpoints
    were created: the runner retries with backoff instead of dying, and then works."""
    append_many(url, streams=2, per_stream=3)
    sub = Subscription("late", recorder("late"))
    runner = SubscriptionRunner([sub], registry=REGISTRY, url=url, poll_interval=0.1)
    real = runner.store.ensure_checkpoints
    failures = 2

    async def flaky(*args: Any) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise DatabaseUnavailableError("the database system is shutting down")
        await real(*args)

    runner.store.ensure_checkpoints = flaky  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
            await store.wait_until_caught_up("late", timeout=20)
    finally:
        stop.set()
        await task
    assert failures == 0
    assert len(seen(url, "late")) == 6
    assert runner.store._pool is None


@pytest.mark.parametrize("name", ["", "has space", "x" * 101, "-lead", "semi;colon"])
def test_invalid_subscription_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="subscription name"):
        Subscription(name, recorder("x"))


def test_bad_subscription_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="shards"):
        Subscription("s", recorder("x"), shards=0)
    with pytest.raises(ConfigurationError, match="on_failure"):
        Subscription("s", recorder("x"), on_failure="skip")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="event_types"):
        Subscription("s", recorder("x"), event_types=[int])  # type: ignore[list-item]


async def test_an_unreachable_database_at_start_is_a_typed_error() -> None:
    runner = SubscriptionRunner(
        [Subscription("s", recorder("s"))],
        registry=REGISTRY,
        url="postgresql://postgres@127.0.0.1:1/none",
        connect_timeout=1,
    )
    with pytest.raises(DatabaseUnavailableError):
        await runner.run(asyncio.Event())


async def test_waiting_on_an_unknown_subscription_says_so(url: str) -> None:
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        with pytest.raises(SubscriptionNotFoundError):
            await store.wait_until_caught_up("nobody", timeout=1)


async def test_pause_holds_a_subscription_and_resume_and_reset_move_it(url: str) -> None:
    append_many(url, streams=1, per_stream=3)
    sub = Subscription("steered", recorder("steered"))
    async with running(url, sub) as store:
        await store.wait_until_caught_up("steered", timeout=20)
        assert await store.set_status("steered", "paused") == [0]
        with PostgresEventStore(url, registry=REGISTRY) as events:
            result = events.append("acct-0", Credited(amount=9))
        with pytest.raises(WaitTimeoutError):
            await store.wait_for("steered", result, timeout=0.5)
        await store.set_status("steered", "running")
        await store.wait_for("steered", result, timeout=20)
    assert len(seen(url, "steered")) == 4
    with SubscriptionStore(url, registry=REGISTRY) as sync_store:
        assert sync_store.reset("steered", to_end=False) == [0]
        (status,) = sync_store.status("steered")
        assert status.lag_events == 4 and status.owner is None


async def test_read_all_yields_each_committed_event_once_and_resumes_from_a_token(
    url: str,
) -> None:
    append_many(url, streams=3, per_stream=7)
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        pages = [page async for page in store.read_all(batch_size=5)]
        assert pages[-1].caught_up
        assert sum(len(p.events) for p in pages) == 21
        positions = [e.global_position for p in pages for e in p.events]
        assert positions == sorted(set(positions))
        token = pages[2].token
        rest = [e async for page in store.read_all(after=token, batch_size=5) for e in page.events]
        assert [e.global_position for e in rest] == positions[15:]
        with PostgresEventStore(url, registry=REGISTRY) as events:
            events.append("late-1", Noted(text="late"))
        tail = [page async for page in store.read_all(after=pages[-1].token)]
        assert [e.stream_id for p in tail for e in p.events] == ["late-1"]
        notes = [page async for page in store.read_all(event_types=[Noted])]
        assert [e.stream_id for p in notes for e in p.events] == ["late-1"]
        with pytest.raises(InvalidArgumentError):
            [page async for page in store.read_all(after="not-a-token")]


async def test_status_reports_owner_lag_and_handled_counts(url: str) -> None:
    append_many(url, streams=2, per_stream=5)
    async with running(url, Subscription("watched", recorder("watched"), shards=2)) as store:
        await store.wait_until_caught_up("watched", timeout=20)
        shards = await store.status("watched")
    assert [s.shard for s in shards] == [0, 1]
    assert sum(s.handled for s in shards) == 10
    assert all(s.lag_events == 0 and s.owner for s in shards)


class _CountingStore(SubscriptionStore):
    """Counts the pages read inside batches and the pages read ahead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pages = 0
        self.ahead = 0

    def page(self, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is threading.main_thread():  # not the one reading ahead
            self.pages += 1
        return super().page(*args, **kwargs)

    def read_page(self, *args: Any, **kwargs: Any) -> Any:
        self.ahead += 1
        return super().read_page(*args, **kwargs)


def test_the_next_page_is_read_ahead_and_used_only_at_its_own_window(url: str) -> None:
    from eventstore.subscriptions.engine import ShardWorker

    with (
        PostgresEventStore(url, registry=REGISTRY) as store,
        psycopg.connect(url) as conn,
        conn.transaction(),  # one transaction: one window of 2,500 events
    ):
        for n in range(2500):
            store.append(f"ahead-{n % 50}", Credited(amount=n), conn=conn)
    seen: list[int] = []
    calls = 0

    def handler(batch: Batch[Any], conn: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RetryLater("not now")
        seen.extend(e.global_position for e in batch.events)

    sub = Subscription("ahead", handler, batch_size=1000)
    with _CountingStore(url, registry=REGISTRY) as source:
        source.ensure_checkpoints(sub.name, 1, False)
        (epoch,) = source.claim_shards(sub.name, "me", 30, 1).values()
        worker = ShardWorker(source, sub, 0, epoch, lease_ttl=30)
        assert worker.step().read == 1000
        assert (source.pages, source.ahead) == (1, 1)  # the second page is on its way
        # The second batch uses it, asks for the third, then fails and rolls back.
        assert worker.step().status == "postponed"
        assert (source.pages, source.ahead) == (1, 2)
        # The checkpoint is still at the second page's window, not the third's: the page
        # read ahead is not used, the batch reads its own (and asks for the third again).
        assert worker.step().read == 1000
        assert (source.pages, source.ahead) == (2, 3)
        assert worker.step().read == 500  # the third page, read ahead
        assert (source.pages, source.ahead) == (2, 3)
        assert worker.step().caught_up
    everything = sorted(seen)
    assert len(everything) == 2500 == len(set(seen))
    assert seen == everything


def test_a_live_worker_reads_its_next_page_with_its_checkpoint_and_only_where_it_left_it(
    url: str,
) -> None:
    """Once caught up, a worker reads the next window's first page in the checkpoint's
    round trip; it uses that page only when the checkpoint is drained where it left it and
    the window is narrow, and otherwise reads the window the usual way."""
    from eventstore.subscriptions.engine import ShardWorker

    seen_positions: list[int] = []

    def handler(batch: Batch[Any], conn: Any) -> None:
        seen_positions.extend(e.global_position for e in batch.events)

    def log() -> list[int]:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT global_position FROM eventstore.events ORDER BY 1")
            return [r[0] for r in rows]

    sub = Subscription("live", handler)
    with (
        PostgresEventStore(url, registry=REGISTRY) as store,
        _CountingStore(url, registry=REGISTRY) as source,
    ):
        source.ensure_checkpoints(sub.name, 1, False)
        (epoch,) = source.claim_shards(sub.name, "me", 30, 1).values()
        worker = ShardWorker(source, sub, 0, epoch, lease_ttl=30)
        for n in range(3):
            store.append(f"live-{n}", Credited(amount=n))
        assert worker.step().read == 3
        assert source.pages == 1
        low = source.lows(sub.name)[0]
        # Caught up: the next windows come with the checkpoint, no page read of their own.
        for n in range(3, 5):
            store.append(f"live-{n}", Credited(amount=n))
        result = worker.step()
        assert (result.read, result.caught_up, source.pages) == (2, True, 1)
        assert worker.step().read == 0  # nothing new: an empty window, still no page read
        assert source.pages == 1
        assert seen_positions == log()
        # A window wider than the page's range (300 transactions, the range 256 ids) is
        # read the usual way; the range then follows the width seen (twice it): the next
        # window of 300 comes with the checkpoint.
        for _ in range(2):
            for n in range(300):
                store.append(f"wide-{n % 7}", Credited(amount=n))
            assert worker.step().read == 300
            assert source.pages == 2
            assert seen_positions == log()
        # A checkpoint moved meanwhile (here: set back by hand) is not where the worker
        # left it: the page read with it is dropped and the window read from the checkpoint.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE eventstore.checkpoints SET low = %s WHERE name = %s", (str(low), sub.name)
            )
        store.append("live-5", Credited(amount=5))
        assert worker.step().read == 500  # a full page: 603 events follow that checkpoint
        assert source.pages == 3
    everything = log()  # the first three, the 602 after them, then live-5
    assert seen_positions == everything[:-1] + everything[3:503]


def test_a_fenced_batch_commits_nothing_of_its_handler(url: str) -> None:
    """The checkpoint's move travels with the COMMIT: when the move is fenced (another
    runner took the shard while the handler ran), the COMMIT must not run, so the
    handler's writes vanish."""
    from eventstore.subscriptions import records
    from eventstore.subscriptions.engine import ShardWorker

    append_many(url, streams=2, per_stream=2)
    record = recorder("fenced")
    taken = {"done": False}

    def handler(batch: Batch[Any], conn: Any) -> None:
        record(batch, conn)
        if not taken["done"]:  # meanwhile, the lease ran out and another runner took it
            taken["done"] = True
            with psycopg.connect(url, autocommit=True) as other:
                other.execute(
                    "UPDATE eventstore.checkpoints SET owner = 'new', epoch = epoch + 1 "
                    "WHERE name = 'fenced'"
                )

    sub = Subscription("fenced", handler)
    with SubscriptionStore(url, registry=REGISTRY) as source:
        source.ensure_checkpoints(sub.name, 1, False)
        (epoch,) = source.claim_shards(sub.name, "old", 30, 1).values()
        stale = ShardWorker(source, sub, 0, epoch, lease_ttl=30)
        with pytest.raises(records.FencedError):
            stale.step()
        assert seen(url, "fenced") == []
        fresh = ShardWorker(source, sub, 0, epoch + 1, lease_ttl=30)
        assert fresh.step().read == 4
    assert len(seen(url, "fenced")) == 4


def test_a_failing_handler_reruns_its_batch_in_savepoints_without_its_first_writes(
    url: str,
) -> None:
    """A batch calls its handler once with no savepoint; when it fails, the whole batch
    rolls back (the writes of that first call too) and runs again in savepoints, where
    only the failing event is parked."""
    from eventstore.subscriptions.engine import ShardWorker

    append_many(url, streams=1, per_stream=5)
    calls: list[int] = []
    record = recorder("rerun", lambda e: e.version == 4)

    def handler(batch: Batch[Any], conn: Any) -> None:
        calls.append(len(batch.events))
        record(batch, conn)

    sub = Subscription("rerun", handler, retries=1)
    with SubscriptionStore(url, registry=REGISTRY) as source:
        source.ensure_checkpoints(sub.name, 1, False)
        (epoch,) = source.claim_shards(sub.name, "me", 30, 1).values()
        worker = ShardWorker(source, sub, 0, epoch, lease_ttl=30)
        first = worker.step()
        assert (first.read, first.caught_up) == (0, False)  # rolled back, to be run again
        assert seen(url, "rerun") == []  # events 1-3 written by the failed call: gone
        assert worker.step().read == 5
        assert [(d.version, d.reason) for d in source.dead_letters("rerun")] == [
            (4, "handler_failed"),
            (5, "held"),
        ]
        assert worker.step().caught_up
    assert seen(url, "rerun") == [("acct-0", 1), ("acct-0", 2), ("acct-0", 3)]
    assert calls[0] == 5  # the first call had the whole batch


def test_a_handler_with_side_effects_runs_in_savepoints_from_its_first_call(url: str) -> None:
    """``side_effects=True``: no rollback and rerun of the whole batch (that would repeat
    the handler's outside work); the failing event is found in the batch's transaction."""
    from eventstore.subscriptions.engine import ShardWorker

    append_many(url, streams=1, per_stream=5)
    transactions: set[tuple[int, Any]] = set()
    record = recorder("effects", lambda e: e.version == 4)

    def handler(batch: Batch[Any], conn: Any) -> None:
        started = conn.execute("SELECT now()").fetchone()[0]
        transactions.add((conn.info.backend_pid, started))
        record(batch, conn)

    sub = Subscription("effects", handler, retries=1, side_effects=True)
    with SubscriptionStore(url, registry=REGISTRY) as source:
        source.ensure_checkpoints(sub.name, 1, False)
        (epoch,) = source.claim_shards(sub.name, "me", 30, 1).values()
        worker = ShardWorker(source, sub, 0, epoch, lease_ttl=30)
        assert worker.step().read == 5  # parked in this very batch
        assert [(d.version, d.reason) for d in source.dead_letters("effects")] == [
            (4, "handler_failed"),
            (5, "held"),
        ]
    assert len(transactions) == 1  # every call of the narrowing in one transaction
    assert seen(url, "effects") == [("acct-0", 1), ("acct-0", 2), ("acct-0", 3)]
