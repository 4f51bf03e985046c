"""Inline projections: applied in the appending transaction, and switched to and from the daemon.

`Tally` refuses an event that is not its stream's next version, so an event applied twice,
missed or out of order fails the append (inline) or parks a dead letter (daemon); every
test ends comparing the read model with a replay of the log.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from eventstore import (
    AsyncPostgresEventStore,
    ConfigurationError,
    PostgresEventStore,
    RecordedEvent,
    WrongExpectedVersionError,
)
from eventstore.postgres.connections import sqlalchemy_url
from eventstore.subscriptions.window import PgSnapshot
from projections import (
    AsyncInlineProjections,
    AsyncProjection,
    AsyncProjectionManager,
    InlineProjections,
    ProjectionNotFoundError,
    ProjectionStateError,
    apply_inline,
    apply_inline_async,
    handles,
)
from projections.manager_async import _running
from tests.projections.app import Tally, TallyV2, read_model, replay_of_log
from tests.projections.support import REGISTRY, append_ticks, eventually, query, running
from tests.reliability.subscriber_app import Ticked

SUBSCRIPTION = "projection:tally:v1"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlalchemy_url(url), pool_size=20)
    yield engine
    engine.dispose()


@pytest.fixture
def store(url: str) -> Iterator[PostgresEventStore]:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        yield store


def tick(n: int, writer: str = "w") -> Ticked:
    return Ticked(writer=writer, txn=n, n=n)


async def dead_letters(manager: AsyncProjectionManager) -> int:
    return sum(s.dead_letters for s in await manager.subscriptions.status(SUBSCRIPTION))


class Writers:
    """Appends through `InlineProjections` from threads, each append its own transaction."""

    def __init__(self, engine: sa.Engine, store: PostgresEventStore, streams: int) -> None:
        self.inline = InlineProjections(store, [Tally()])
        self.engine = engine
        self.streams = streams
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.appended = 0
        self._lock = threading.Lock()

    def append(self, writer: int, n: int) -> None:
        stream = f"w-{(writer * 7 + n) % self.streams}"
        try:
            with self.engine.begin() as conn:
                self.inline.append(stream, [tick(n, f"w{writer}"), tick(n + 1)], conn=conn)
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)
            return
        with self._lock:
            self.appended += 1

    def run(self, writer: int, count: int | None = None) -> None:
        n = 0
        while (count is None and not self.stop.is_set()) or (count is not None and n < count):
            self.append(writer, n)
            n += 1


async def landed(writers: Writers, count: int) -> None:
    """Returns once ``count`` appends have landed (in the current mode), or on an error."""

    async def condition() -> bool:
        return writers.appended >= count or bool(writers.errors)

    await eventually(condition, 30, f"{count} appends")


async def test_an_inline_append_writes_the_read_model_in_its_own_transaction(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    inline = InlineProjections(store, [Tally()])
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        assert await manager.mode("tally") == "daemon"
        window = await manager.set_mode("tally", "inline", timeout=20)
        assert window is not None and window.is_open
        assert await manager.mode(Tally) == "inline"
    # The daemon is stopped: what is read below was written by the appends themselves.
    with engine.connect() as conn, conn.begin() as transaction:
        inline.append("mine-1", [tick(1), tick(2)], conn=conn)
        # Read in the same transaction: its own write, with no wait at all.
        assert conn.execute(sa.text("SELECT events FROM read_models.tally")).scalar() == 2
        transaction.rollback()
    assert read_model(url) == {}
    assert query(url, "SELECT count(*) FROM eventstore.events") == [(0,)]
    with engine.begin() as conn:
        result = inline.append("mine-1", [tick(1), tick(2)], conn=conn)
    assert read_model(url) == replay_of_log(url) == {"mine-1": (2, 2, read_model(url)["mine-1"][2])}
    async with running(url, Tally(), auto_switch=False) as manager:
        await manager.wait_for(Tally, result, timeout=0.5)  # at once: it applied itself
        await manager.wait_until_caught_up(Tally, timeout=20)
        assert await dead_letters(manager) == 0  # the daemon skipped what was inline
    assert read_model(url) == replay_of_log(url)


async def test_apply_inline_applies_only_a_live_inline_version(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    with engine.connect() as conn:
        result = store.append("early-1", tick(1), conn=conn)
        events = list(store.read_stream("early-1", conn=conn))
        with pytest.raises(ProjectionNotFoundError):  # never prepared
            apply_inline(Tally(), events, conn)
        conn.rollback()
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        with engine.begin() as conn:
            result = store.append("early-1", tick(1), conn=conn)
            events = list(store.read_stream("early-1", conn=conn))
            assert apply_inline(Tally(), events, conn) is False  # daemon mode: the daemon's
        await manager.wait_for(Tally, result, timeout=20)
        assert read_model(url)["early-1"][0] == 1
        with pytest.raises(ProjectionNotFoundError):
            await manager.set_mode("nobody", "inline")
        with pytest.raises(ConfigurationError, match="mode must be"):
            await manager.set_mode("tally", "sideways")  # type: ignore[arg-type]


async def test_sixteen_concurrent_inline_writers_leave_the_read_model_equal_to_a_replay(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    append_ticks(url, streams=4, per_stream=3, prefix="w")  # some history, the daemon's
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        await manager.set_mode("tally", "inline", timeout=20)
        writers = Writers(engine, store, streams=8)
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(writers.run, w, 15) for w in range(16)]
            await asyncio.to_thread(lambda: [f.result() for f in futures])
        assert writers.errors == []
        assert writers.appended == 16 * 15
        assert read_model(url) == replay_of_log(url)  # no wait: every append applied itself
        await manager.wait_until_caught_up(Tally, timeout=30)
        assert await dead_letters(manager) == 0
    assert read_model(url) == replay_of_log(url)


@pytest.mark.parametrize("delay", ["0", "0.01-0.03"])
async def test_switching_modes_under_concurrent_appends_applies_each_event_once_in_order(
    url: str,
    engine: sa.Engine,
    store: PostgresEventStore,
    delay: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With a delay, each batch (and each inline application) holds its transaction open a
    # while: the daemon lags, so a switch to inline finds events it has still to apply.
    monkeypatch.setenv("PROJECTION_HANDLER_DELAY", delay)
    writers = Writers(engine, store, streams=6)
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(writers.run, w) for w in range(8)]
            try:
                for mode in ("inline", "daemon", "inline", "daemon", "inline"):
                    # A liveness deadline: with row locks alone a switch could wait behind
                    # the steady inline appends for minutes (each wait shorter than its
                    # lock_timeout); the name's advisory lock queues them behind it.
                    await asyncio.wait_for(
                        manager.set_mode("tally", mode, timeout=30),  # type: ignore[arg-type]
                        60,
                    )
                    assert await manager.mode("tally") == mode
                    await landed(writers, writers.appended + 20)
            finally:
                writers.stop.set()
                await asyncio.to_thread(lambda: [f.result() for f in futures])
        assert writers.errors == []
        await manager.wait_until_caught_up(Tally, timeout=30)
        assert await dead_letters(manager) == 0
        assert read_model(url) == replay_of_log(url)
        # And back to the daemon once more, with the log at rest.
        await manager.set_mode("tally", "daemon", timeout=30)
        last = append_ticks(url, streams=2, per_stream=2, prefix="after")
        await manager.wait_for(Tally, last, timeout=20)
        await manager.wait_until_caught_up(Tally, timeout=30)
        assert await dead_letters(manager) == 0
    assert read_model(url) == replay_of_log(url)
    assert writers.appended > 100


async def test_appends_that_start_while_a_mode_switch_waits_queue_behind_it(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    # Row locks alone let every new inline append (FOR SHARE) past a switch that waits for
    # FOR UPDATE, so under steady appends a switch could wait for minutes.
    waiting = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )

    async def waiters(count: int) -> bool:
        return bool(query(url, waiting)[0][0] >= count)

    def later_append() -> bool:
        with engine.begin() as conn:
            store.append("queued-1", tick(0), conn=conn)
            return apply_inline(Tally(), list(store.read_stream("queued-1", conn=conn)), conn)

    inline = InlineProjections(store, [Tally()])
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        await manager.set_mode("tally", "inline", timeout=20)
        with engine.connect() as first:
            with first.begin():
                inline.append("first-1", [tick(0)], conn=first)  # in flight: holds its locks
                switch = asyncio.create_task(manager.set_mode("tally", "daemon", timeout=30))
                await eventually(lambda: waiters(1), 10, "the switch waits for the append")
                later = asyncio.create_task(asyncio.to_thread(later_append))
                await eventually(lambda: waiters(2), 10, "a later append waits behind it")
                assert not switch.done() and not later.done()
            # The first append commits: the switch goes through, then the later append.
            window = await switch
            assert window is not None and not window.is_open
            assert await later is False  # it saw the daemon's mode: the daemon applies it
        await manager.wait_until_caught_up(Tally, timeout=20)
        assert await dead_letters(manager) == 0
    assert read_model(url) == replay_of_log(url)


async def test_a_version_with_dead_letters_does_not_go_inline(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        with engine.begin() as conn:  # a row that makes the stream's next event "not next"
            conn.execute(sa.text("INSERT INTO read_models.tally_v1 VALUES ('bad-1', 1, 5, 0)"))
        append_ticks(url, streams=2, per_stream=1, prefix="bad")  # bad-1@1 is parked
        await manager.wait_until_caught_up(Tally, timeout=20)
        assert await dead_letters(manager) == 1
        with pytest.raises(ProjectionStateError, match="dead letters"):
            await manager.set_mode("tally", "inline", timeout=5)
        assert await manager.mode("tally") == "daemon"


async def test_a_blue_green_switch_from_an_inline_version_misses_nothing(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    writers = Writers(engine, store, streams=5)
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
        await manager.set_mode("tally", "inline", timeout=20)
        writers.run(0, 20)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(writers.run, w) for w in range(1, 5)]
        try:
            async with running(url, Tally(), TallyV2(), auto_switch=False) as manager:
                await manager.wait_until_caught_up(TallyV2, version=2, timeout=30)
                switched = await manager.switch("tally", 2, timeout=30)
                assert switched.status == "live"
                assert await manager.mode("tally") == "daemon"  # the new version: daemon
                writers.stop.set()
                await asyncio.to_thread(lambda: [f.result() for f in futures])
                await manager.wait_until_caught_up(TallyV2, timeout=30)
        finally:
            writers.stop.set()
    assert writers.errors == []
    assert read_model(url) == replay_of_log(url)  # the view: version 2, built by the daemon


def test_a_repeated_append_applies_nothing_again(
    url: str, engine: sa.Engine, store: PostgresEventStore
) -> None:
    async def inline_mode() -> None:
        async with running(url, Tally()) as manager:
            await manager.wait_until_caught_up(Tally, timeout=20)  # prepared, running
            await manager.set_mode("tally", "inline", timeout=20)

    asyncio.run(inline_mode())
    inline = InlineProjections(store, [Tally()])
    event = tick(1)
    with engine.begin() as conn:
        first = inline.append("again-1", event, conn=conn)
    with engine.begin() as conn:
        again = inline.append("again-1", event, conn=conn, event_ids=first.event_ids)
    assert again.repeated
    assert read_model(url)["again-1"][0] == 1
    with pytest.raises(WrongExpectedVersionError), engine.begin() as conn:
        inline.append("again-1", tick(2), conn=conn, expected_version=0)


def test_a_switch_counts_its_own_transaction_as_running() -> None:
    # pg_current_snapshot() shows its own transaction finished when a later one finished
    # first; the daemon sees it running until it commits, so a switch waiting for the
    # daemon to cover that snapshot would wait for itself.
    seen = PgSnapshot(100, 110, (104,))
    assert _running(seen, 107) == PgSnapshot(100, 110, (104, 107))
    assert _running(seen, 95) == PgSnapshot(95, 110, (95, 104))
    assert _running(seen, 110) == seen  # at xmax: already running
    assert _running(seen, 104) == seen
    assert _running(seen, None) == seen


seen_async = sa.Table(
    "seen_async",
    sa.MetaData(schema="read_models"),
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
)


class SeenAsync(AsyncProjection):
    """Counts each stream's events, with a coroutine handler on an async connection."""

    name = "seen-async"
    tables = (seen_async,)

    @handles
    async def ticked(self, event: RecordedEvent[Ticked], conn: AsyncConnection) -> None:
        table = self.table("seen_async")
        row = insert(table).values(stream_id=event.stream_id, events=1)
        await conn.execute(
            row.on_conflict_do_update(
                index_elements=[table.c.stream_id], set_={"events": table.c.events + 1}
            )
        )


async def test_an_async_projection_applies_inline_on_an_async_connection(url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(url))
    count = sa.select(seen_async.c.events).where(seen_async.c.stream_id == "a-1")
    try:
        async with running(url, SeenAsync()) as manager:
            await manager.wait_until_caught_up(SeenAsync, timeout=20)
            await manager.set_mode(SeenAsync, "inline", timeout=20)
        async with AsyncPostgresEventStore(url, registry=REGISTRY) as store:
            inline = AsyncInlineProjections(store, [SeenAsync()])
            async with engine.connect() as conn:
                await inline.append("a-1", [tick(1), tick(2)], conn=conn)
                assert (await conn.execute(count)).scalar() == 2  # its own write
                await conn.rollback()
                assert (await conn.execute(count)).scalar() is None
            async with engine.begin() as conn:
                result = await inline.append("a-1", tick(3), conn=conn)
                events = [e async for e in store.read_stream("a-1", conn=conn)]
                assert await apply_inline_async(SeenAsync(), events[:0], conn) is True
        async with engine.connect() as conn:
            assert (await conn.execute(count)).scalar() == 1
        async with running(url, SeenAsync()) as manager:
            await manager.wait_for(SeenAsync, result, timeout=0.5)
            await manager.wait_until_caught_up(SeenAsync, timeout=20)
        async with engine.connect() as conn:
            assert (await conn.execute(count)).scalar() == 1  # the daemon skipped it
    finally:
        await engine.dispose()
