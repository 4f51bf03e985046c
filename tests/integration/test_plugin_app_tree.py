"""The pytest plugin for an application: its alembic tree builds the template, SQLAlchemy
fixtures reach the per-test database, and the header names the server.

Each test writes a small project (the alembic how-to's tree plus a test module) and runs
pytest on it in a subprocess, the way an application's suite runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from eventstore import migrate
from tests.docs.test_docs import ALEMBIC_DOC, write_project

APP_TESTS = """
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from eventstore import Event, EventRegistry, PostgresEventStore


class OrderPlaced(Event):
    event_type = "shop.OrderPlaced"


def test_the_app_table_and_the_event_store_are_both_there(
    eventstore_sqlalchemy_url, eventstore_engine, eventstore_database_url
):
    assert eventstore_sqlalchemy_url.startswith("postgresql+psycopg://")
    assert eventstore_engine.url.database == eventstore_database_url.rsplit("/", 1)[1]
    with eventstore_engine.connect() as conn:
        tables = set(conn.execute(sa.text(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'eventstore')"
        )).scalars())
    assert {"public.orders", "public.alembic_version", "eventstore.events"} <= tables
    assert "eventstore.alembic_version" not in tables  # the tree records the revisions


def test_a_row_and_an_event_commit_together(eventstore_session, eventstore_database_url):
    registry = EventRegistry([OrderPlaced])
    with PostgresEventStore(eventstore_database_url, registry=registry) as store:
        eventstore_session.execute(sa.text("INSERT INTO orders (id) VALUES ('o-1')"))
        store.append("order-o-1", OrderPlaced(), conn=eventstore_session)
        eventstore_session.commit()
        assert store.stream_info("order-o-1").version == 1
    assert eventstore_session.execute(sa.text("SELECT id FROM orders")).scalars().all() == ["o-1"]


def test_each_test_has_its_own_database(eventstore_session):
    assert eventstore_session.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 0


async def test_the_async_session(eventstore_async_session, eventstore_async_engine):
    assert isinstance(eventstore_async_session, AsyncSession)
    await eventstore_async_session.execute(sa.text("INSERT INTO orders (id) VALUES ('o-2')"))
    await eventstore_async_session.commit()
    async with eventstore_async_engine.connect() as conn:
        found = await conn.execute(sa.text("SELECT id FROM orders"))
        assert found.scalars().all() == ["o-2"]
"""

HOOK_CONFTEST = """
from alembic import command

import migrate_db
from eventstore.postgres.connections import sqlalchemy_url


def pytest_eventstore_migrate_template(url, config):
    alembic_config = migrate_db.alembic_config()
    alembic_config.set_main_option("sqlalchemy.url", sqlalchemy_url(url))
    command.upgrade(alembic_config, "heads")
    return True
"""


def project(tmp_path: Path, ini_option: bool) -> Path:
    root = write_project(ALEMBIC_DOC, tmp_path / "app")
    ini = root / "alembic.ini"
    ini.write_text(
        ini.read_text(encoding="utf-8").replace(
            "eventstore:_migrations/versions", str(migrate.versions_dir())
        ),
        encoding="utf-8",
    )
    options = ["asyncio_mode = auto", "asyncio_default_fixture_loop_scope = function"]
    if ini_option:
        options.append("eventstore_alembic_ini = alembic.ini")
    (root / "pytest.ini").write_text("[pytest]\n" + "\n".join(options) + "\n", encoding="utf-8")
    (root / "test_app.py").write_text(textwrap.dedent(APP_TESTS), encoding="utf-8")
    return root


def run_pytest(root: Path, server_url: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("DATABASE_URL", None)  # the env.py must use the template's URL, not this
    env["EVENTSTORE_TEST_DATABASE_URL"] = server_url
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-W", "error"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.mark.parametrize("how", ["ini option", "hook"])
def test_the_template_is_built_by_the_app_tree(
    tmp_path: Path, eventstore_server_url: str, how: str
) -> None:
    root = project(tmp_path, ini_option=how == "ini option")
    if how == "hook":
        (root / "conftest.py").write_text(textwrap.dedent(HOOK_CONFTEST), encoding="utf-8")
    done = run_pytest(root, eventstore_server_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^4 passed in ", done.stdout.splitlines()[-1].strip("= ")), done.stdout


def test_the_header_names_the_server_without_its_password(
    tmp_path: Path, eventstore_server_url: str
) -> None:
    root = project(tmp_path, ini_option=True)
    parts = urlsplit(eventstore_server_url)
    where = f"{parts.hostname}:{parts.port}" if parts.port else f"{parts.hostname}"
    # A server under trust auth takes any password; one with password auth (the embedded
    # server) needs its own, which must not show either.
    secret = parts.password or "s3cret"
    with_password = urlunsplit(parts._replace(netloc=f"{parts.username}:{secret}@{where}"))
    shown = urlunsplit(parts._replace(netloc=f"{parts.username}@{where}"))
    done = run_pytest(root, with_password)
    header = [line for line in done.stdout.splitlines() if line.startswith("eventstore:")]
    assert len(header) == 1, done.stdout
    assert header[0].startswith(f"eventstore: Postgres {shown} (server 1")
    assert header[0].endswith(", not embedded)") and secret not in done.stdout


def test_a_tree_without_the_event_store_fails_the_template_in_one_message(
    tmp_path: Path, eventstore_server_url: str
) -> None:
    root = project(tmp_path, ini_option=True)
    ini = root / "alembic.ini"
    ini.write_text(
        ini.read_text(encoding="utf-8").replace(str(migrate.versions_dir()), ""),
        encoding="utf-8",
    )
    done = run_pytest(root, eventstore_server_url)
    assert done.returncode != 0
    assert "lacks the event store's revisions" in done.stdout, done.stdout
    assert str(migrate.versions_dir()) in done.stdout
