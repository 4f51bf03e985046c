"""Projection versions on Postgres: prepare, views, switch, drop, waits, and bad input."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from eventstore import PostgresEventStore, RecordedEvent, WaitTimeoutError
from eventstore.subscriptions import AsyncSubscriptionStore, SubscriptionStore, retry_dead_letters
from projections import (
    AsyncProjection,
    AsyncProjectionManager,
    Projection,
    ProjectionDaemon,
    ProjectionGroup,
    ProjectionNotFoundError,
    ProjectionStateError,
    ProjectionTablesMissingError,
    ProjectionVersionBackwardsError,
    handles,
    subscription_group,
)
from tests.projections.app import (
    Noted,
    Tally,
    TallyV2,
    read_model,
    replay_of_log,
)
from tests.projections.support import (
    REGISTRY,
    append_ticks,
    eventually,
    query,
    running,
    versions,
)
from tests.reliability.subscriber_app import Ticked


def seen_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(schema="read_models"),
        sa.Column("stream_id", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
    )


class Picky(Projection):
    """Records each event; raises on bad-0@2."""

    name = "picky"
    tables = (seen_table("picky"),)
    retries = 1
    shards = 1

    poisoned = True

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: sa.Connection) -> None:
        if self.poisoned and (event.stream_id, event.version) == ("bad-0", 2):
            raise ValueError("poison")
        values = {"stream_id": event.stream_id, "version": event.version}
        conn.execute(insert(self.table(self.tables[0].name)).values(**values))


class Halting(Picky):
    name = "halting"
    tables = (seen_table("halting"),)
    on_failure = "halt"


async def test_the_first_version_goes_live_at_once_and_is_read_through_its_view(
    url: str,
) -> None:
    append_ticks(url, streams=4, per_stream=5)
    async with running(url, Tally()) as manager:
        with PostgresEventStore(url, registry=REGISTRY) as store:
            store.append("note-1", Noted(text="skipped in SQL"))
            last = store.append("s-0", Ticked(writer="w", txn=9, n=9))
        await manager.wait_for(Tally, last, timeout=20)
        assert read_model(url) == replay_of_log(url)
        (status,) = await manager.status("tally")
    assert versions(url) == [(1, "live")]
    assert status.tables == ("read_models.tally_v1",)
    assert status.handled == 21 and status.lag_events == 0 and status.running == "running"
    assert query(url, "SELECT relkind::text FROM pg_class WHERE relname = 'tally'") == [("v",)]


async def test_a_switch_points_the_views_at_the_new_version_and_keeps_the_old_until_dropped(
    url: str,
) -> None:
    append_ticks(url, streams=3, per_stream=4)
    async with running(url, Tally(), TallyV2(), auto_switch=False) as manager:
        await manager.wait_until_caught_up("tally", version=2, timeout=20)
        assert versions(url) == [(1, "live"), (2, "building")]
        assert "writer" not in _columns(url, "tally")  # still v1 behind the view
        switched = await manager.switch("tally", timeout=20)
        assert (switched.version, switched.status) == (2, "live")
        assert versions(url) == [(1, "retired"), (2, "live")]
        assert "writer" in _columns(url, "tally")
        last = append_ticks(url, streams=1, per_stream=2, prefix="late")
        await manager.wait_for(TallyV2, last, timeout=20)
        assert read_model(url) == replay_of_log(url)
        # The retired version stopped where it was switched away from; it is kept.
        assert "late-0" not in read_model(url, "read_models.tally_v1")
        with pytest.raises(ProjectionStateError, match="never dropped"):
            await manager.drop("tally", 2)
        assert await manager.drop("tally", 1) == ["read_models.tally_v1"]
    assert versions(url) == [(2, "live")]
    assert query(url, "SELECT to_regclass('read_models.tally_v1')") == [(None,)]
    names = {r[0] for r in query(url, "SELECT DISTINCT name FROM eventstore.checkpoints")}
    assert names == {"projection:tally:v2"}


def _columns(url: str, relation: str) -> list[str]:
    rows = query(
        url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'read_models' "
        "AND table_name = %s ORDER BY ordinal_position",
        (relation,),
    )
    return [r[0] for r in rows]


async def test_a_version_below_the_live_one_is_refused_as_going_backwards(url: str) -> None:
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        manager = AsyncProjectionManager(store)
        assert (await manager.prepare(TallyV2())).status == "live"
        daemon = ProjectionDaemon(ProjectionGroup(REGISTRY, (Tally(),)), url=url)
        with pytest.raises(ProjectionVersionBackwardsError, match="version going backwards") as e:
            await daemon.run(asyncio.Event())
    assert (e.value.name, e.value.version, e.value.live) == ("tally", 1, 2)
    assert versions(url) == [(2, "live")]


async def test_missing_tables_are_a_clear_error_when_the_daemon_may_not_create_them(
    url: str,
) -> None:
    daemon = ProjectionDaemon(ProjectionGroup(REGISTRY, (Tally(),)), url=url, create_tables=False)
    with pytest.raises(ProjectionTablesMissingError, match=r"read_models\.tally_v1") as caught:
        await daemon.run(asyncio.Event())
    assert caught.value.missing == ("read_models.tally_v1",)
    assert versions(url) == []


async def test_a_retired_version_never_runs_again(url: str) -> None:
    append_ticks(url, streams=2, per_stream=2)
    async with running(url, Tally(), TallyV2()) as manager:
        await eventually(_is_live_2(manager), 20, "v2 switched live")
    with pytest.raises(ProjectionStateError, match="retired"):
        await ProjectionDaemon(ProjectionGroup(REGISTRY, (Tally(),)), url=url).run()
    daemon = ProjectionDaemon(ProjectionGroup(REGISTRY, (Tally(), TallyV2())), url=url)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await eventually(lambda: _ran(daemon), 20, "the daemon runs")
    stop.set()
    await task
    assert [p.version for p in daemon.running] == [2]


async def _ran(daemon: ProjectionDaemon) -> bool:
    return bool(daemon.running)


def _is_live_2(manager: AsyncProjectionManager) -> Any:
    async def check() -> bool:
        return await manager.live_version("tally") == 2

    return check


async def test_wait_for_reads_your_own_writes_through_the_view(url: str) -> None:
    async with running(url, Tally()) as manager:
        with PostgresEventStore(url, registry=REGISTRY) as store:
            for n in range(1, 6):
                result = store.append("mine-1", Ticked(writer="me", txn=n, n=n))
                await manager.wait_for(Tally, result, timeout=20)
                assert read_model(url)["mine-1"][0] == n  # the write is there, at once
        await manager.subscriptions.set_status("projection:tally:v1", "paused")
        result = append_ticks(url, streams=1, per_stream=1, prefix="later")
        with pytest.raises(WaitTimeoutError):
            await manager.wait_for("tally", result, timeout=0.5)
        with pytest.raises(ProjectionNotFoundError):
            await manager.wait_for("nobody", result, timeout=0.2)


async def test_a_handler_failing_on_one_event_parks_it_and_the_rest_keeps_moving(
    url: str,
) -> None:
    append_ticks(url, streams=1, per_stream=3, prefix="bad")
    last = append_ticks(url, streams=3, per_stream=3, prefix="good")
    picky = Picky()
    async with running(url, picky) as manager:
        await manager.wait_for(Picky, last, timeout=20)
        await manager.wait_until_caught_up(Picky, timeout=20)
        letters = await manager.subscriptions.dead_letters("projection:picky:v1")
        (status,) = await manager.status("picky")
    assert [(d.stream_id, d.version, d.reason) for d in letters] == [
        ("bad-0", 2, "handler_failed"),
        ("bad-0", 3, "held"),
    ]
    assert "ValueError: poison" in (letters[0].error or "")
    assert status.dead_letters == 2
    rows = query(url, "SELECT stream_id, version FROM read_models.picky ORDER BY 1, 2")
    assert Counter(s for s, _ in rows) == {"bad-0": 1, "good-0": 3, "good-1": 3, "good-2": 3}
    # Fixed: the engine's retry replays the held stream through the projection, in order.
    picky.poisoned = False
    subscriptions = subscription_group(ProjectionGroup(REGISTRY, (picky,)))
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with SubscriptionStore(url, registry=REGISTRY, engine=engine) as store:
            outcome = retry_dead_letters(store, subscriptions.get("projection:picky:v1"))
    finally:
        engine.dispose()
    assert outcome.released == ("bad-0",)
    assert query(url, "SELECT version FROM read_models.picky WHERE stream_id = 'bad-0'") == [
        (1,),
        (2,),
        (3,),
    ]


class PipelinedPicky(Projection):
    """Writes through psycopg (pipeline mode): the database refuses bad-0@2's row."""

    name = "pipelined-picky"
    tables = (
        sa.Table(
            "pipelined_picky",
            sa.MetaData(schema="read_models"),
            sa.Column("stream_id", sa.Text, primary_key=True),
            sa.Column("version", sa.BigInteger, primary_key=True),
            sa.CheckConstraint("stream_id <> 'bad-0' OR version <> 2", name="no_bad_2"),
        ),
    )
    connection = "psycopg"
    retries = 1

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "INSERT INTO read_models.pipelined_picky_v1 VALUES (%s, %s)",
            (event.stream_id, event.version),
        )


@pytest.mark.parametrize("pipeline", [True, False])
async def test_a_statement_failing_in_pipeline_mode_parks_exactly_its_event(
    url: str, pipeline: bool
) -> None:
    append_ticks(url, streams=1, per_stream=4, prefix="bad")
    last = append_ticks(url, streams=3, per_stream=5, prefix="good")
    projection = type("Picky", (PipelinedPicky,), {"pipeline": pipeline})()
    async with running(url, projection) as manager:
        await manager.wait_for(PipelinedPicky, last, timeout=20)
        await manager.wait_until_caught_up(PipelinedPicky, timeout=20)
        letters = await manager.subscriptions.dead_letters("projection:pipelined-picky:v1")
    assert [(d.stream_id, d.version, d.reason) for d in letters] == [
        ("bad-0", 2, "handler_failed"),
        ("bad-0", 3, "held"),
        ("bad-0", 4, "held"),
    ]
    assert "no_bad_2" in (letters[0].error or "")
    rows = query(url, "SELECT stream_id, version FROM read_models.pipelined_picky ORDER BY 1, 2")
    assert Counter(s for s, _ in rows) == {"bad-0": 1, "good-0": 5, "good-1": 5, "good-2": 5}


async def test_halt_stops_only_that_projection_and_others_keep_running(url: str) -> None:
    append_ticks(url, streams=1, per_stream=3, prefix="bad")
    async with running(url, Halting(), Tally()) as manager:

        async def halted() -> bool:
            return [s.running for s in await manager.status("halting")] == ["halted"]

        await eventually(halted, 20, "the halting projection halts")
        last = append_ticks(url, streams=2, per_stream=2, prefix="more")
        await manager.wait_for(Tally, last, timeout=20)
        (status,) = await manager.status("halting")
        with pytest.raises(WaitTimeoutError):
            await manager.wait_for(Halting, last, timeout=0.3)
    assert "ValueError: poison" in (status.shards[0].last_error or "")
    assert query(url, "SELECT count(*) FROM read_models.halting") == [(0,)]  # rolled back
    assert read_model(url) == replay_of_log(url)


counts = sa.Table(
    "counts",
    sa.MetaData(schema="read_models"),
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
)


class Counts(Projection):
    """Counts events per stream with one statement per batch."""

    name = "counts"
    tables = (counts,)
    event_types = (Ticked,)
    batch_size = 100

    def handle_batch(
        self, events: Sequence[RecordedEvent[Any]], conn: sa.Connection, *, replay: bool
    ) -> None:
        table = self.table("counts")
        per_stream = Counter(e.stream_id for e in events)
        statement = insert(table).values(
            [{"stream_id": s, "events": n} for s, n in per_stream.items()]
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.stream_id],
                set_={"events": table.c.events + statement.excluded.events},
            )
        )


async def test_a_batch_handler_writes_a_whole_batch_in_one_statement(url: str) -> None:
    last = append_ticks(url, streams=7, per_stream=40)
    async with running(url, Counts()) as manager:
        await manager.wait_for(Counts, last, timeout=20)
        (status,) = await manager.status("counts")
    assert query(url, "SELECT count(*), sum(events) FROM read_models.counts") == [(7, 280)]
    assert status.handled == 280


class AsyncSeen(AsyncProjection):
    """Records events through the batch's psycopg async connection."""

    name = "async-seen"
    tables = (seen_table("async_seen"),)
    connection = "psycopg"

    @handles
    async def ticked(
        self, event: RecordedEvent[Ticked], conn: psycopg.AsyncConnection[Any]
    ) -> None:
        await conn.execute(
            "INSERT INTO read_models.async_seen_v1 VALUES (%s, %s)",
            (event.stream_id, event.version),
        )


async def test_an_async_projection_writes_through_the_async_connection(url: str) -> None:
    last = append_ticks(url, streams=2, per_stream=3)
    async with running(url, AsyncSeen()) as manager:
        await manager.wait_for(AsyncSeen, last, timeout=20)
    assert query(url, "SELECT count(*) FROM read_models.async_seen") == [(6,)]


async def test_a_building_version_is_dropped_only_by_force_and_not_while_it_runs(
    url: str,
) -> None:
    append_ticks(url, streams=1, per_stream=2)
    async with running(url, Tally(), TallyV2(), auto_switch=False) as manager:
        await manager.wait_until_caught_up("tally", version=2, timeout=20)
        with pytest.raises(ProjectionStateError, match="force=True"):
            await manager.drop("tally", 2)
        with pytest.raises(ProjectionStateError, match="stop it first"):
            await manager.drop("tally", 2, force=True)
    async with AsyncSubscriptionStore(url, registry=REGISTRY) as store:
        manager = AsyncProjectionManager(store)
        assert await manager.drop("tally", 2, force=True) == ["read_models.tally_v2"]
        with pytest.raises(ProjectionNotFoundError):
            await manager.drop("tally", 2)
        with pytest.raises(ProjectionStateError, match="nothing to switch to"):
            await manager.switch("tally")
    assert versions(url) == [(1, "live")]
