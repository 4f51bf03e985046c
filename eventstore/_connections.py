"""Finds the psycopg connection behind whatever the caller hands the store.

The store runs its statements on the caller's own connection, inside the caller's
transaction, so a web handler's rows and its events commit or roll back together. It
never commits or rolls back a connection it was given.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from sqlalchemy import engine as sa_engine
from sqlalchemy import orm as sa_orm
from sqlalchemy.ext import asyncio as sa_asyncio

from eventstore.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    SchemaNotMigratedError,
    TransactionConflictError,
)

SyncConnectionLike: TypeAlias = "psycopg.Connection[Any] | sa_engine.Connection | sa_orm.Session"
AsyncConnectionLike: TypeAlias = (
    "psycopg.AsyncConnection[Any] | sa_asyncio.AsyncConnection | sa_asyncio.AsyncSession"
)

_WRONG_DRIVER = (
    "the event store runs on psycopg 3: create the SQLAlchemy engine with a "
    "'postgresql+psycopg://' URL (got driver {driver!r})"
)


def unwrap_connection(conn: SyncConnectionLike) -> psycopg.Connection[Any]:
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


@contextlib.contextmanager
def translated_errors(stream_id: str | None = None) -> Iterator[None]:
    """Translates driver errors into the toolkit's own, by constraint name and class.

    This is the single boundary where psycopg exceptions become `EventStoreError`s.
    """
    try:
        yield
    except EventStoreError:
        raise
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "events_event_id_key":
            raise DuplicateEventIdError(stream_id or "", []) from exc
        raise
    except psycopg.errors.DataError as exc:  # e.g. a snapshot state that is not JSON
        raise InvalidArgumentError(f"Postgres refused the data: {exc}") from exc
    except psycopg.errors.UndefinedTable as exc:
        raise SchemaNotMigratedError(
            f"event store tables not found ({exc.diag.message_primary}); run `eventstore migrate`"
        ) from exc
    except psycopg_pool.PoolTimeout as exc:
        raise DatabaseUnavailableError(f"no database connection in time: {exc}") from exc
    except psycopg.OperationalError as exc:
        # psycopg puts SQLSTATE class 40 (40001 serialization, 40P01 deadlock) directly
        # under OperationalError, so the class is told by its code.
        if (exc.sqlstate or "").startswith("40"):
            raise TransactionConflictError(f"transaction aborted by Postgres: {exc}") from exc
        if not _is_connection_loss(exc):
            raise  # a statement or lock timeout, a cancel: not an outage
        raise DatabaseUnavailableError(f"database unavailable: {exc}") from exc


# SQLSTATE class 08 (connection exception) and the server shutting down or starting up.
_LOST: Final = ("57P01", "57P02", "57P03")


def _is_connection_loss(exc: psycopg.OperationalError) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _LOST
