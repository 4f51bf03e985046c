"""The projection scenarios of the testing kit, on an in-memory log and on Postgres."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from eventstore import ConfigurationError, EventRegistry, PostgresEventStore, RecordedEvent
from projections import AsyncProjection, Projection, handles
from projections.testing import Log, catch_up_async, projection_scenario
from tests.projections.app import Noted
from tests.reliability.subscriber_app import Ticked

totals = sa.Table(
    "totals",
    sa.MetaData(schema="kit_models"),
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("last_writer", sa.Text, nullable=False),
)


def upsert(table: sa.Table, event: RecordedEvent[Ticked]) -> Any:
    row = insert(table).values(
        stream_id=event.stream_id, total=event.data.n, last_writer=event.data.writer
    )
    return row.on_conflict_do_update(
        index_elements=[table.c.stream_id],
        set_={"total": table.c.total + row.excluded.total, "last_writer": row.excluded.last_writer},
    )


class Totals(Projection):
    name = "totals"
    tables = (totals,)

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: sa.Connection) -> None:
        conn.execute(upsert(self.table("totals"), event))


class AsyncTotals(AsyncProjection):
    name = "totals"
    tables = (totals,)

    @handles
    async def ticked(self, event: RecordedEvent[Ticked], conn: AsyncConnection) -> None:
        await conn.execute(upsert(self.table("totals"), event))


def tick(n: int, writer: str = "ann") -> Ticked:
    return Ticked(writer=writer, txn=0, n=n)


@pytest.mark.parametrize("log", ["memory", "postgres"])
def test_given_events_then_the_read_model_holds_the_expected_rows(
    eventstore_engine: sa.Engine, eventstore_registry: EventRegistry, log: Log
) -> None:
    registry = eventstore_registry
    scenario = projection_scenario(Totals(), eventstore_engine, registry=registry, log=log)
    scenario.given("a-1", tick(10), tick(5, "bob"))
    scenario.given("a-2", tick(1))
    scenario.given("a-1", tick(2))
    scenario.given("notes", Noted(text="not for this projection"))
    scenario.then_rows(
        "totals",
        [
            {"stream_id": "a-2", "total": 1, "last_writer": "ann"},
            {"stream_id": "a-1", "total": 17, "last_writer": "ann"},
        ],
    )
    scenario.then_rows("totals", [("a-1", 17, "ann"), ("a-2", 1, "ann")])
    with pytest.raises(AssertionError, match="expected rows"):
        scenario.then_rows("totals", [("a-1", 16, "ann"), ("a-2", 1, "ann")])
    with pytest.raises(AssertionError, match="expected rows"):
        scenario.then_rows("totals", [("a-1", 17, "ann")])
    # Each event applied once, however often the scenario looks.
    assert scenario.rows("totals")[0] == {"stream_id": "a-1", "total": 17, "last_writer": "ann"}


def test_an_async_projection_runs_in_a_postgres_scenario_only(
    eventstore_engine: sa.Engine, eventstore_registry: EventRegistry
) -> None:
    with pytest.raises(ConfigurationError, match="log='postgres'"):
        projection_scenario(AsyncTotals(), eventstore_engine, registry=eventstore_registry)
    scenario = projection_scenario(
        AsyncTotals(), eventstore_engine, registry=eventstore_registry, log="postgres"
    )
    scenario.given("a-1", tick(3)).given("a-1", tick(4)).then_rows("totals", [("a-1", 7, "ann")])


async def test_catch_up_returns_once_everything_committed_before_it_is_handled(
    eventstore_database_url: str, eventstore_registry: EventRegistry, eventstore_engine: sa.Engine
) -> None:
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        for n in range(1, 51):
            store.append(f"s-{n % 7}", tick(n))
    await catch_up_async(eventstore_database_url, Totals(), registry=eventstore_registry)
    with eventstore_engine.connect() as conn:
        total = conn.execute(sa.text("SELECT sum(total) FROM kit_models.totals_v1")).scalar()
    assert total == sum(range(1, 51))  # no sleep: everything was there when it returned
