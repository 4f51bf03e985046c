"""Finds the psycopg connection behind whatever the caller hands the store.

The store runs its statements on the caller's own connection, inside the caller's
transaction, so a web handler's rows and its events commit or roll back together. It
never commits or rolls back a connection it was given.
"""

from __future__ import annotations

import math
import re
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import engine as sa_engine
from sqlalchemy import orm as sa_orm
from sqlalchemy.ext import asyncio as sa_asyncio

from eventstore.errors import ConfigurationError, DatabaseUnavailableError
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
    """Returns a libpq URL: a SQLAlchemy ``postgresql+driver://`` scheme loses its driver.

    A URL libpq could not parse (no scheme, a port that is not a number, an unknown query
    parameter) is a `ConfigurationError` that shows the input, password masked.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError("the database URL is empty")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigurationError(f"malformed database URL {mask_url(url)!r}: {exc}") from None
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres") or not url.startswith(parts.scheme + "://"):
        raise ConfigurationError(
            f"not a Postgres URL: {mask_url(url)!r} (expected postgresql://user@host:port/db)"
        )
    result = "postgresql" + url[len(parts.scheme) :]  # urlunsplit would drop an empty host
    try:
        conninfo_to_dict(result)
    except psycopg.ProgrammingError as exc:
        reason = _one_line(str(exc)).replace(result, mask_url(result))
        raise ConfigurationError(f"malformed database URL {mask_url(url)!r}: {reason}") from None
    return result


def sqlalchemy_url(url: str) -> str:
    """Returns a SQLAlchemy URL that uses the psycopg 3 driver."""
    return "postgresql+psycopg" + libpq_url(url).removeprefix("postgresql")


_PASSWORD_IN_NETLOC: Final = re.compile(r"^(?P<scheme>[^:/]*://[^:@/]*):[^@/]*@")


def mask_url(url: str) -> str:
    """Returns ``url`` with its password (in the user part or the query) shown as ``***``."""
    masked = _PASSWORD_IN_NETLOC.sub(r"\g<scheme>:***@", url, count=1)
    try:
        parts = urlsplit(masked)
    except ValueError:
        return masked
    if "password" not in parts.query:
        return masked
    query = [(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(parts._replace(query=urlencode(query, safe="*")))


def describe_url(url: str) -> str:
    """Returns ``user@host:port/database``, for messages: no scheme, no password."""
    info = conninfo_to_dict(libpq_url(url))
    user = info.get("user", "")
    host = info.get("host") or "localhost"
    where = f"{host}:{info.get('port') or 5432}/{info.get('dbname', '')}"
    return f"{user}@{where}" if user else where


def probe(url: str, timeout: float = 5.0) -> None:
    """Connects once and disconnects; a failure names its cause (`DatabaseUnavailableError`).

    Call it before opening a pool: a pool would only report that no connection came in time.
    """
    conninfo = libpq_url(url)
    try:
        psycopg.connect(conninfo, connect_timeout=max(1, math.ceil(timeout))).close()
    except psycopg.OperationalError as exc:
        raise connection_error(conninfo, exc) from exc


def probe_version(url: str, timeout: float = 5.0) -> str:
    """Connects once and returns the server's version (``15.8``), naming a failure's cause."""
    conninfo = libpq_url(url)
    try:
        with psycopg.connect(conninfo, connect_timeout=max(1, math.ceil(timeout))) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except psycopg.OperationalError as exc:
        raise connection_error(conninfo, exc) from exc


def connection_error(url: str, exc: psycopg.OperationalError) -> DatabaseUnavailableError:
    """Returns the one-line error for a failed connection: missing database, refused port..."""
    info = conninfo_to_dict(libpq_url(url))
    host = info.get("host") or "localhost"
    server = f"{host}:{info.get('port') or 5432}"
    text = _one_line(str(exc))
    for pattern, explain in _CAUSES:
        match = pattern.search(text)
        if match:
            cause = explain.format(server=server, **match.groupdict())
            return DatabaseUnavailableError(f"cannot connect to {describe_url(url)}: {cause}")
    detail = text.removeprefix("connection failed: ")
    return DatabaseUnavailableError(f"cannot connect to {describe_url(url)}: {detail}")


# What a wrong URL or role looks like: waiting will not help.
_PERMANENT: Final = re.compile(
    r"database \"[^\"]*\" does not exist|role \"[^\"]*\" does not exist"
    r"|authentication failed|no pg_hba.conf entry|password authentication"
)


def is_transient_connect_error(exc: psycopg.OperationalError) -> bool:
    """Tells whether a failed connection may succeed soon (refused, starting up, no answer).

    A missing database or role, or a refused password, is not: retrying cannot help.
    """
    return _PERMANENT.search(_one_line(str(exc))) is None


_CAUSES: Final = (
    (
        re.compile(r'database "(?P<name>[^"]*)" does not exist'),
        "database {name!r} does not exist on {server} (create it, or fix the URL)",
    ),
    (
        re.compile(r'role "(?P<name>[^"]*)" does not exist'),
        "role {name!r} does not exist on {server}",
    ),
    (
        re.compile(r'authentication failed for user "(?P<name>[^"]*)"'),
        "the server refused role {name!r}: wrong password (or pg_hba.conf rule)",
    ),
    (
        re.compile(r"no pg_hba.conf entry for host (?P<entry>.*)"),
        "pg_hba.conf has no entry for host {entry}",
    ),
    (
        re.compile(r"Connection refused"),
        "connection refused at {server}: is Postgres running and listening on that port?",
    ),
    (
        re.compile(r"failed to resolve host '(?P<name>[^']*)'|could not translate host name"),
        "unknown host: {server}",
    ),
    (
        re.compile(r"timeout expired"),
        "no answer from {server} in time (a firewall, or the wrong host?)",
    ),
)


def _one_line(text: str) -> str:
    return " ".join(text.split())
