"""Handlers that return their writes (`Sql`): bulk runs, their order, failures, inline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import PostgresEventStore, RecordedEvent
from eventstore.events import Event
from eventstore.memory import InMemoryEventStore
from eventstore.postgres.connections import sqlalchemy_url
from projections import (
    AsyncProjection,
    InlineProjections,
    Projection,
    Sql,
    handles,
)
from tests.projections.app import Noted
from tests.projections.support import REGISTRY, append_ticks, query, running
from tests.reliability.subscriber_app import Ticked

# ---------------------------------------------------------------------------------------
# The collecting rule, on a connection that records what it is asked to execute.


class Recorder:
    """Stands in for a SQLAlchemy connection: records each ``execute(statement, params)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def execute(self, statement: str, params: Any = None) -> None:
        self.calls.append((statement, params))


def recorded(*events: Event) -> list[RecordedEvent[Event]]:
    store = InMemoryEventStore(REGISTRY)
    store.append("s-1", list(events))
    return list(store.read_stream("s-1"))


def tick(n: int) -> Ticked:
    return Ticked(writer="w", txn=0, n=n)


class Mixed(Projection):
    """Ticks return writes (two statements for odd numbers); notes execute directly."""

    name = "mixed"

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: Any) -> list[Sql]:
        n = event.data.n
        writes = [Sql("tick", {"n": n})]
        if n % 2:
            writes.append(Sql("odd", {"n": n}))
        return writes

    @handles
    def noted(self, event: RecordedEvent[Noted], conn: Any) -> None:
        conn.execute("note", {"text": event.data.text})


def test_consecutive_writes_of_one_statement_run_as_one_executemany_in_event_order() -> None:
    conn = Recorder()
    events = recorded(tick(2), tick(4), tick(1), tick(3), tick(6), tick(8))
    Mixed().handle_batch(events, conn, replay=False)
    assert conn.calls == [
        ("tick", [{"n": 2}, {"n": 4}, {"n": 1}]),
        ("odd", {"n": 1}),  # a run of one: a plain execute
        ("tick", {"n": 3}),
        ("odd", {"n": 3}),
        ("tick", [{"n": 6}, {"n": 8}]),
    ]


def test_pending_writes_run_before_a_handler_not_declared_to_return_them() -> None:
    conn = Recorder()
    events = recorded(tick(2), tick(4), Noted(text="a"), tick(6), Noted(text="b"))
    Mixed().handle_batch(events, conn, replay=False)
    assert conn.calls == [
        ("tick", [{"n": 2}, {"n": 4}]),
        ("note", {"text": "a"}),
        ("tick", {"n": 6}),
        ("note", {"text": "b"}),
    ]


class AsyncRecorder(Recorder):
    async def execute(self, statement: str, params: Any = None) -> None:  # type: ignore[override]
        self.calls.append((statement, params))


class AsyncMixed(AsyncProjection):
    """`Mixed`, with coroutine handlers."""

    name = "mixed"

    @handles
    async def ticked(self, event: RecordedEvent[Ticked], conn: Any) -> Sql | None:
        return Sql("tick", {"n": event.data.n}) if event.data.n else None

    @handles
    async def noted(self, event: RecordedEvent[Noted], conn: Any) -> None:
        await conn.execute("note", {"text": event.data.text})


async def test_an_async_projection_runs_returned_writes_by_the_same_rule() -> None:
    conn = AsyncRecorder()
    events = recorded(tick(2), tick(0), tick(4), Noted(text="a"), tick(6), tick(8))
    await AsyncMixed().handle_batch(events, conn, replay=False)
    assert conn.calls == [
        ("tick", [{"n": 2}, {"n": 4}]),
        ("note", {"text": "a"}),
        ("tick", [{"n": 6}, {"n": 8}]),
    ]


class Sneaky(Projection):
    """A handler declared to return writes that also executes one itself."""

    name = "sneaky"

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: Any) -> Sql | None:
        if event.data.n == 3:
            conn.execute("direct", {"n": 3})
            return None
        return Sql("tick", (event.data.n,))


def test_a_handler_declared_to_return_writes_runs_before_earlier_pending_ones() -> None:
    conn = Recorder()
    Sneaky().handle_batch(recorded(tick(1), tick(2), tick(3), tick(4)), conn, replay=False)
    # The documented rule: its own statement runs before the writes still pending.
    assert conn.calls == [("direct", {"n": 3}), ("tick", [(1,), (2,), (4,)])]


def test_equal_statements_join_a_run_and_a_bad_return_is_refused() -> None:
    class Texts(Projection):
        name = "texts"

        @handles
        def ticked(self, event: RecordedEvent[Ticked], conn: Any) -> Sql:
            # A new but equal string each time: still one run.
            return Sql("".join(["ins", "ert"]), (event.data.n,))

    conn = Recorder()
    Texts().handle_batch(recorded(tick(1), tick(2)), conn, replay=False)
    assert conn.calls == [("insert", [(1,), (2,)])]

    class Wrong(Projection):
        name = "wrong"

        @handles
        def ticked(self, event: RecordedEvent[Ticked], conn: Any) -> Any:
            return "INSERT ..."

    with pytest.raises(TypeError, match=r"Wrong\.ticked returned str"):
        Wrong().handle_batch(recorded(tick(1)), Recorder(), replay=False)


def test_what_a_handler_is_declared_to_return_is_read_from_its_annotation() -> None:
    class Declared(Projection):
        name = "declared"

        @handles
        def ticked(self, event: RecordedEvent[Ticked], conn: Any) -> Sequence[Sql] | None:
            return None

        @handles(Noted)
        def noted(self, event: Missing, conn: Any) -> Sql | None:  # type: ignore[name-defined]  # noqa: F821
            return None  # its hints do not resolve: its return annotation is read as text

    assert Declared.__handlers__[Ticked].returns
    assert Declared.__handlers__[Noted].returns
    assert Mixed.__handlers__[Ticked].returns and not Mixed.__handlers__[Noted].returns


# ---------------------------------------------------------------------------------------
# On Postgres: the read model, the order of writes, a failing write, inline.

log_table = sa.Table(
    "returned_log",
    sa.MetaData(schema="read_models"),
    sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("stream_id", sa.Text, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
    sa.Column("seen", sa.BigInteger),  # for notes: the rows written before them
    sa.CheckConstraint("stream_id <> 'bad-0' OR version <> 2", name="no_bad_2"),
)
LOG_INSERT = "INSERT INTO read_models.returned_log_v1 (stream_id, version) VALUES (%s, %s)"


class PsycopgLog(Projection):
    """Logs ticks with returned writes; notes log how many rows they see, directly."""

    name = "returned"
    tables = (log_table,)
    connection = "psycopg"
    retries = 1

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: psycopg.Connection[Any]) -> Sql:
        return Sql(LOG_INSERT, (event.stream_id, event.version))

    @handles
    def noted(self, event: RecordedEvent[Noted], conn: psycopg.Connection[Any]) -> None:
        conn.execute(
            "INSERT INTO read_models.returned_log_v1 (stream_id, version, seen) "
            "SELECT %s, %s, count(*) FROM read_models.returned_log_v1",
            (event.stream_id, event.version),
        )


class SqlAlchemyLog(Projection):
    """The same log, with a SQLAlchemy Core insert built once."""

    name = "returned"
    tables = (log_table,)
    retries = 1

    def __init__(self) -> None:
        self.insert = insert(self.table("returned_log"))

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: sa.Connection) -> Sql:
        return Sql(self.insert, {"stream_id": event.stream_id, "version": event.version})


class SessionLog(SqlAlchemyLog):
    connection = "session"

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: orm.Session) -> Sql:
        return Sql(self.insert, {"stream_id": event.stream_id, "version": event.version})


class AsyncPsycopgLog(AsyncProjection):
    name = "returned"
    tables = (log_table,)
    connection = "psycopg"
    retries = 1

    @handles
    async def ticked(self, event: RecordedEvent[Ticked], conn: psycopg.AsyncConnection[Any]) -> Sql:
        return Sql(LOG_INSERT, (event.stream_id, event.version))


class AsyncSqlAlchemyLog(AsyncProjection):
    name = "returned"
    tables = (log_table,)
    retries = 1

    def __init__(self) -> None:
        self.insert = insert(self.table("returned_log"))

    @handles
    async def ticked(self, event: RecordedEvent[Ticked], conn: AsyncConnection) -> Sql:
        return Sql(self.insert, {"stream_id": event.stream_id, "version": event.version})


KINDS: dict[str, Any] = {
    "psycopg-pipeline": type("Pipelined", (PsycopgLog,), {"pipeline": True}),
    "psycopg": type("Unpipelined", (PsycopgLog,), {"pipeline": False}),
    "sqlalchemy": SqlAlchemyLog,
    "session": SessionLog,
    "async-psycopg": AsyncPsycopgLog,
    "async-sqlalchemy": AsyncSqlAlchemyLog,
}


def logged(url: str) -> list[tuple[str, int]]:
    return [
        (r[0], r[1]) for r in query(url, "SELECT stream_id, version FROM read_models.returned_log")
    ]


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_write_that_fails_parks_exactly_its_event(url: str, kind: str) -> None:
    append_ticks(url, streams=1, per_stream=4, prefix="bad")
    last = append_ticks(url, streams=3, per_stream=5, prefix="good")
    projection = KINDS[kind]()
    async with running(url, projection) as manager:
        await manager.wait_for(projection, last, timeout=30)
        await manager.wait_until_caught_up(projection, timeout=30)
        letters = await manager.subscriptions.dead_letters("projection:returned:v1")
    assert [(d.stream_id, d.version, d.reason) for d in letters] == [
        ("bad-0", 2, "handler_failed"),
        ("bad-0", 3, "held"),
        ("bad-0", 4, "held"),
    ]
    assert "no_bad_2" in (letters[0].error or "")
    rows = logged(url)
    assert Counter(s for s, _ in rows) == {"bad-0": 1, "good-0": 5, "good-1": 5, "good-2": 5}
    assert len(set(rows)) == len(rows)


async def test_returned_and_direct_writes_land_in_event_order(url: str) -> None:
    with PostgresEventStore(url, registry=REGISTRY) as store:
        store.append("mix-1", [tick(1), tick(2), Noted(text="a"), tick(3), Noted(text="b")])
        last = store.append("mix-1", [tick(4), tick(5)])
    async with running(url, PsycopgLog()) as manager:
        await manager.wait_for(PsycopgLog, last, timeout=30)
    rows = query(url, "SELECT version, seen FROM read_models.returned_log ORDER BY seq")
    # Each note saw every earlier event's row: the pending writes ran before it.
    assert rows == [(1, None), (2, None), (3, 2), (4, None), (5, 4), (6, None), (7, None)]


effects_table = sa.Table(
    "returned_effects",
    sa.MetaData(schema="read_models"),
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
)


class Counted(Projection):
    """Counts events per stream with a returned upsert; records a side effect unless replaying."""

    name = "returned-counted"
    tables = (effects_table,)

    def __init__(self) -> None:
        table = self.table("returned_effects")
        row = insert(table)
        self.upsert = row.on_conflict_do_update(
            index_elements=[table.c.stream_id],
            set_={"events": table.c.events + row.excluded.events},
        )
        self.effect = sa.text(
            "INSERT INTO public.side_effects (version, global_position) VALUES (:v, :p)"
        )

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: sa.Connection, replay: bool) -> list[Sql]:
        writes = [Sql(self.upsert, {"stream_id": event.stream_id, "events": 1})]
        if not replay:
            writes.append(Sql(self.effect, {"v": self.version, "p": event.global_position}))
        return writes


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(sqlalchemy_url(url))
    yield engine
    engine.dispose()


async def test_returned_writes_apply_inline_in_the_appending_transaction(
    url: str, engine: sa.Engine
) -> None:
    count = sa.text("SELECT events FROM read_models.returned_effects WHERE stream_id = 'in-1'")
    async with running(url, Counted()) as manager:
        await manager.wait_until_caught_up(Counted, timeout=20)
        await manager.set_mode(Counted, "inline", timeout=20)
    with PostgresEventStore(url, registry=REGISTRY) as store:
        inline = InlineProjections(store, [Counted()])
        with engine.connect() as conn, conn.begin() as transaction:
            inline.append("in-1", [tick(1), tick(2), tick(3)], conn=conn)
            assert conn.execute(count).scalar() == 3  # its own write, in its transaction
            transaction.rollback()
        with engine.begin() as conn:
            result = inline.append("in-1", [tick(1), tick(2)], conn=conn)
    with engine.connect() as conn:
        assert conn.execute(count).scalar() == 2
    assert query(url, "SELECT count(*) FROM side_effects") == [(2,)]  # not a replay
    async with running(url, Counted(), auto_switch=False) as manager:
        await manager.wait_for(Counted, result, timeout=0.5)  # it applied itself
        await manager.wait_until_caught_up(Counted, timeout=20)
    with engine.connect() as conn:
        assert conn.execute(count).scalar() == 2  # the daemon skipped it
