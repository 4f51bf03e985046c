"""Projections run by an application role given only `eventstore grants` (and its own
read-model schema): the table of inline windows comes with migration 0008 and the grants,
so the role goes inline; on a database not migrated that far, the role (which may not
create the table) runs everything in daemon mode until `eventstore migrate` creates it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from eventstore import PostgresEventStore, SchemaNotMigratedError, migrate
from eventstore.cli import main
from eventstore.postgres.connections import sqlalchemy_url
from projections import AsyncProjectionManager, InlineProjections
from tests.projections.app import SIDE_EFFECTS, Tally, read_model, replay_of_log
from tests.projections.support import REGISTRY, running
from tests.reliability.subscriber_app import Ticked


@pytest.fixture
def roles(eventstore_database_url: str) -> Iterator[tuple[str, str]]:
    """Yields (owner URL, application role URL): the role has `eventstore grants` and may
    create schemas in the database (for its read models), not in the event store's."""
    owner = eventstore_database_url
    role, password = f"app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(SIDE_EFFECTS)
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(database[0]), sql.Identifier(role)
            )
        )
    assert main(["grants", role, "--apply", "--url", owner]) == 0
    parts = urlsplit(owner)
    netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
    yield owner, urlunsplit(parts._replace(netloc=netloc))
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def tick(n: int) -> Ticked:
    return Ticked(writer="app", txn=n, n=n)


async def inline_then_daemon(
    app: str, inline: InlineProjections, manager: AsyncProjectionManager, n: int
) -> None:
    """Goes inline, appends a tick applied by its own transaction, goes back to daemon."""
    engine = sa.create_engine(sqlalchemy_url(app))
    try:
        await manager.set_mode("tally", "inline", timeout=20)
        with engine.begin() as conn:
            inline.append("a-1", tick(n), conn=conn)
            assert read_model(app)["a-1"][0] == n - 1  # not committed yet
        assert read_model(app)["a-1"][0] == n  # applied by its own transaction
        await manager.set_mode("tally", "daemon", timeout=20)
        with engine.begin() as conn:
            result = inline.append("a-1", tick(n + 1), conn=conn)
        await manager.wait_for(Tally, result, timeout=20)
        await manager.wait_until_caught_up(Tally, timeout=20)
    finally:
        engine.dispose()


async def test_a_role_given_only_the_grants_goes_inline(roles: tuple[str, str]) -> None:
    _, app = roles
    with PostgresEventStore(app, registry=REGISTRY) as store:
        inline = InlineProjections(store, [Tally()])
        async with running(app, Tally()) as manager:
            with PostgresEventStore(app, registry=REGISTRY) as plain:
                result = plain.append("a-1", tick(1))
            await manager.wait_for(Tally, result, timeout=20)
            assert await manager.mode("tally") == "daemon"
            await inline_then_daemon(app, inline, manager, 2)
            assert await manager.mode("tally") == "daemon"
            dead = await manager.subscriptions.dead_letters("projection:tally:v1")
    assert dead == []
    assert read_model(app) == replay_of_log(app)
    assert read_model(app)["a-1"][0] == 3


async def test_before_0008_projections_run_in_daemon_mode_until_migrated(
    roles: tuple[str, str],
) -> None:
    owner, app = roles
    migrate.downgrade(owner, "0007_snapshot_event")  # a database migrated before 0008
    engine = sa.create_engine(sqlalchemy_url(app))
    try:
        with PostgresEventStore(app, registry=REGISTRY) as store:
            inline = InlineProjections(store, [Tally()])
            async with running(app, Tally()) as manager:
                await manager.wait_until_caught_up(Tally, timeout=20)
                assert await manager.mode("tally") == "daemon"
                with pytest.raises(SchemaNotMigratedError, match="eventstore migrate"):
                    await manager.set_mode("tally", "inline", timeout=10)
                with engine.begin() as conn:  # applies nothing: the daemon does
                    result = inline.append("a-1", [tick(1), tick(2)], conn=conn)
                await manager.wait_for(Tally, result, timeout=20)
                assert read_model(app) == replay_of_log(app)
                # The owner migrates (0008 creates the table) and grants again.
                migrate.upgrade(owner)
                assert main(["grants", str(urlsplit(app).username), "--apply", "--url", owner]) == 0
                await manager.prepare(Tally())  # registers the version's mode row
                await inline_then_daemon(app, inline, manager, 3)
                dead = await manager.subscriptions.dead_letters("projection:tally:v1")
        assert dead == []
        assert read_model(app) == replay_of_log(app)
    finally:
        engine.dispose()
