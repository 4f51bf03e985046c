"""Projections run by an application role given only `eventstore grants` (and its own
read-model schema): without the right to create the table of inline windows, everything
runs in daemon mode; once the schema's owner creates it, inline mode works."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql

from eventstore import PostgresEventStore
from eventstore.cli import main
from eventstore.postgres.connections import sqlalchemy_url
from projections import InlineProjections, ProjectionError
from projections import sql as projection_sql
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


async def test_without_the_modes_table_projections_run_in_daemon_mode_until_it_is_created(
    roles: tuple[str, str],
) -> None:
    owner, app = roles
    engine = sa.create_engine(sqlalchemy_url(app))
    try:
        with PostgresEventStore(app, registry=REGISTRY) as store:
            inline = InlineProjections(store, [Tally()])
            async with running(app, Tally()) as manager:
                await manager.wait_until_caught_up(Tally, timeout=20)
                assert await manager.mode("tally") == "daemon"
                with pytest.raises(ProjectionError, match="may not create"):
                    await manager.set_mode("tally", "inline", timeout=10)
                with engine.begin() as conn:  # applies nothing: the daemon does
                    result = inline.append("a-1", [tick(1), tick(2)], conn=conn)
                await manager.wait_for(Tally, result, timeout=20)
                assert read_model(app) == replay_of_log(app)
                # The owner creates the table (the statement the error showed) and grants it.
                with psycopg.connect(owner, autocommit=True) as conn:
                    conn.execute(projection_sql.render("eventstore").create_modes)
                    conn.execute(
                        sql.SQL(
                            "GRANT SELECT, INSERT, UPDATE, DELETE ON eventstore.projection_modes "
                            "TO {}"
                        ).format(sql.Identifier(str(urlsplit(app).username)))
                    )
                await manager.prepare(Tally())  # registers the version's mode row
                await manager.set_mode("tally", "inline", timeout=20)
                with engine.begin() as conn:
                    inline.append("a-1", tick(3), conn=conn)
                    assert read_model(app)["a-1"][0] == 2  # not committed yet
                assert read_model(app)["a-1"][0] == 3  # applied by its own transaction
                await manager.set_mode("tally", "daemon", timeout=20)
                with engine.begin() as conn:
                    result = inline.append("a-1", tick(4), conn=conn)
                await manager.wait_for(Tally, result, timeout=20)
                await manager.wait_until_caught_up(Tally, timeout=20)
                dead = await manager.subscriptions.dead_letters("projection:tally:v1")
        assert dead == []
        assert read_model(app) == replay_of_log(app)
    finally:
        engine.dispose()
