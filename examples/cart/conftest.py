"""Fixtures of the carts' tests: a database migrated with the app's alembic tree, a client.

The event store's pytest plugin finds the server (``EVENTSTORE_TEST_DATABASE_URL``, else
a container or an embedded server); the app's tree, with the event store's revisions in
it, migrates a template database once, and each test gets a clone of it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cart.app import create_app
from migrate_db import upgrade

from eventstore.pytest_plugin import create_database, drop_database


@pytest.fixture(scope="session")
def cart_template(eventstore_server_url: str) -> Iterator[str]:
    """Yields the name of a database migrated once with the app's alembic tree."""
    name = f"cart_template_{uuid.uuid4().hex[:12]}"
    url = create_database(eventstore_server_url, name)
    try:
        upgrade(url)
        yield name
    finally:
        drop_database(eventstore_server_url, name)


@pytest.fixture
def cart_database_url(eventstore_server_url: str, cart_template: str) -> Iterator[str]:
    """Yields the URL of this test's own copy of the migrated database."""
    name = f"cart_test_{uuid.uuid4().hex[:12]}"
    url = create_database(eventstore_server_url, name, template=cart_template)
    try:
        yield url
    finally:
        drop_database(eventstore_server_url, name)


@pytest.fixture
async def client(cart_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Yields an httpx client of the app, with its lifespan running (store open)."""
    app = create_app(cart_database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://carts") as client:
            yield client
