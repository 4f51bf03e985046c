"""Declaring projections: handlers from annotations, versioned tables, the subscription (no DB)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import sqlalchemy as sa

from eventstore import ConfigurationError, Event, EventRegistry, RecordedEvent
from projections import (
    AsyncProjection,
    DuplicateProjectionError,
    Projection,
    ProjectionGroup,
    handles,
    subscription_for,
)
from tests.projections.app import Noted, Tally, TallyV2
from tests.reliability.subscriber_app import Ticked


class Opened(Event):
    event_type: ClassVar[str] = "definition.Opened"


def table(name: str = "accounts", schema: str | None = "read_models") -> sa.Table:
    return sa.Table(
        name,
        sa.MetaData(schema=schema),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text),
        sa.UniqueConstraint("owner", name="accounts_owner_key"),
        sa.Index("accounts_owner_idx", "owner"),
    )


def test_handlers_are_registered_by_the_event_class_of_their_annotation() -> None:
    assert set(Tally.__handlers__) == {Ticked}
    assert Tally.handled_types() == (Ticked,)
    assert TallyV2.__handlers__ == Tally.__handlers__  # inherited by the next version


def test_each_version_has_its_own_tables_and_constraint_names() -> None:
    class Accounts(Projection):
        name = "accounts"
        version = 3
        tables = (table(),)

        @handles
        def opened(self, event: RecordedEvent[Opened], conn: Any) -> None:
            pass

    versioned = Accounts.table("accounts")
    assert (versioned.schema, versioned.name) == ("read_models", "accounts_v3")
    names = {c.name for c in versioned.constraints} | {i.name for i in versioned.indexes}
    assert {"accounts_owner_key_v3", "accounts_owner_idx_v3"} <= names
    assert Tally.table("tally").name == "tally_v1"
    assert TallyV2.table("tally").name == "tally_v2"
    with pytest.raises(ConfigurationError, match="no table 'nope'"):
        Accounts.table("nope")


def test_the_subscription_is_named_after_the_version_and_reads_only_handled_types() -> None:
    subscription = subscription_for(TallyV2())
    assert subscription.name == "projection:tally:v2"
    assert subscription.type_names == (Ticked.event_type,)
    assert subscription.on_failure == "park"
    assert subscription.connection == "sqlalchemy"
    assert not subscription.is_async


def test_an_async_projection_gets_an_async_subscription() -> None:
    class Async(AsyncProjection):
        name = "async"
        tables = (table(),)
        connection = "psycopg"

        @handles
        async def opened(self, event: RecordedEvent[Opened], conn: Any) -> None:
            pass

    assert subscription_for(Async()).is_async


def test_a_handler_without_an_event_annotation_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"RecordedEvent\[EventClass\]"):

        class Bad(Projection):
            name = "bad"

            @handles
            def opened(self, event: Opened, conn: Any) -> None:
                pass


def test_an_explicit_event_class_needs_no_annotation() -> None:
    class Explicit(Projection):
        name = "explicit"

        @handles(Opened)
        def opened(self, event, conn):  # type: ignore[no-untyped-def]
            pass

    assert set(Explicit.__handlers__) == {Opened}


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"name": "has space"}, "name 'has space'"),
        ({"version": 0}, "version must be an int"),
        ({"tables": (table(schema=None),)}, "has no schema"),
        ({"tables": table()}, "sequence of sqlalchemy Tables"),
        ({"tables": (table("x" * 61),)}, "longer than Postgres keeps"),
    ],
)
def test_bad_definitions_are_configuration_errors(attributes: dict[str, Any], message: str) -> None:
    def opened(self: Any, event: RecordedEvent[Opened], conn: Any) -> None:
        pass

    namespace = {"name": "fine", "opened": handles(opened), **attributes}
    with pytest.raises(ConfigurationError, match=message):
        type("Bad", (Projection,), namespace)


def test_a_projection_that_handles_nothing_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="handles nothing"):

        class Idle(Projection):
            name = "idle"


def test_a_coroutine_handler_in_a_sync_projection_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="must be a plain function"):

        class Mixed(Projection):
            name = "mixed"

            @handles
            async def opened(self, event: RecordedEvent[Opened], conn: Any) -> None:
                pass


def test_one_version_twice_in_a_group_is_a_duplicate_projection_error() -> None:
    registry = EventRegistry([Ticked, Noted])
    with pytest.raises(DuplicateProjectionError) as caught:
        ProjectionGroup(registry, (Tally(), TallyV2(), Tally()))
    assert (caught.value.name, caught.value.version) == ("tally", 1)
    assert isinstance(caught.value, ConfigurationError)
    both = ProjectionGroup(registry, (Tally(), TallyV2()))  # two versions side by side
    assert both.get("tally").version == 2


def test_two_projections_declaring_one_table_are_refused() -> None:
    class Other(Projection):
        name = "other"
        tables = (Tally.tables[0],)

        @handles
        def opened(self, event: RecordedEvent[Opened], conn: Any) -> None:
            pass

    with pytest.raises(ConfigurationError, match=r"both declare the table read_models\.tally"):
        ProjectionGroup(EventRegistry([Ticked, Opened]), (Tally(), Other()))
