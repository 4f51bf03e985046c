"""Finds the psycopg connection behind whatever the caller hands the store.

The store runs its statements on the caller's own connection, inside the caller's
transaction, so a web handler's rows and its events commit or roll back together. It
never commits or rolls back a connection it was given.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from sqlalchemy import engine as sa_engine
from sqlalchemy import orm as sa_orm
from sqlalchemy.ext import asyncio as sa_asyncio

from eventstore.errors import ConfigurationError
from eventstore.store import AsyncConnectionLike, ConnectionLike

_WRONG_DRIVER = (
    "the event store runs on psycopg 3: create the SQLAlchemy engine with a "
    "'postgresql+psycopg://' URL (got driver {driver!r})"
)


def unwrap_connection(conn: ConnectionLike) -> psycopg.Connection[Any]:
    """Returns the psycopg connection behind a psycopg or SQLAlchemy connection or session."""
    if isinstance(conn, psycopg.Connection):
        return conn
    if isinstance(conn, sa_orm.Session):
        conn = conn.connection()
    if isinstance(conn, sa_engine.Connection):
        # SQLAlchemy begins its transaction lazily, on its own first statement; begin it
        # now, or the caller's commit() would not know there is anything to commit.
        if not conn.in_transaction():
            conn.begin()
        raw = conn.connection.driver_connection
        if isinstance(raw, psycopg.Connection):
            return raw
        raise ConfigurationError(_WRONG_DRIVER.format(driver=type(raw).__module__))
    raise ConfigurationError(f"cannot run on a {type(conn).__qualname__}; pass a connection")


async def unwrap_async_connection(conn: AsyncConnectionLike) -> psycopg.AsyncConnection[Any]:
    """Returns the psycopg async connection behind an async connection or session."""
    if isinstance(conn, psycopg.AsyncConnection):
        return conn
    if isinstance(conn, sa_asyncio.AsyncSession):
        conn = await conn.connection()
    if isinstance(conn, sa_asyncio.AsyncConnection):
        if not conn.in_transaction():
            await conn.begin()
        raw = (await conn.get_raw_connection()).driver_connection
        if isinstance(raw, psycopg.AsyncConnection):
            return raw
        raise ConfigurationError(_WRONG_DRIVER.format(driver=type(raw).__module__))
    raise ConfigurationError(f"cannot run on a {type(conn).__qualname__}; pass an async connection")


def libpq_url(url: str) -> str:
    """Returns a libpq URL: a SQLAlchemy ``postgresql+driver://`` scheme loses its driver."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a Postgres URL: {parts.scheme}://...")
    return urlunsplit(parts._replace(scheme="postgresql"))


def sqlalchemy_url(url: str) -> str:
    """Returns a SQLAlchemy URL that uses the psycopg 3 driver."""
    parts = urlsplit(libpq_url(url))
    return urlunsplit(parts._replace(scheme="postgresql+psycopg"))
