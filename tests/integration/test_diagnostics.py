"""A wrong DSN names its cause, in one line, from the command line and from the library.

Refused port, missing database, unknown role: `DatabaseUnavailableError` (exit code 3)
whose message says which, raised at once instead of after the pool's timeout. A malformed
URL: `ConfigurationError` (exit code 1) showing the input with its password masked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import pytest

from eventstore import (
    AsyncPostgresEventStore,
    ConfigurationError,
    DatabaseUnavailableError,
    EventRegistry,
    PostgresEventStore,
    migrate,
)
from eventstore.cli import EXIT_ERROR, EXIT_UNREACHABLE
from eventstore.postgres.inspection import list_streams

Mutate = Callable[[str], str]


def _replace(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    user = changes.get("user", parts.username or "postgres")
    # The password stays: a server with password auth (the embedded one) must get as far
    # as looking at the database or role for the message to name them.
    secret = f":{parts.password}" if parts.password else ""
    port = changes.get("port", str(parts.port or 5432))
    path = changes.get("path", parts.path)
    return urlunsplit(parts._replace(netloc=f"{user}{secret}@{host}:{port}", path=path))


# (name, how to break a good URL, what the message must say)
WRONG: list[tuple[str, Mutate, str]] = [
    ("refused port", lambda u: _replace(u, port="1"), "connection refused at 127.0.0.1:1"),
    (
        "missing database",
        lambda u: _replace(u, path="/no_such_database_here"),
        "database 'no_such_database_here' does not exist",
    ),
    (
        "bad role",
        lambda u: _replace(u, user="no_such_role"),
        # Under trust auth the server says the role is missing; under password auth it
        # refuses the password without saying whether the role exists.
        "role 'no_such_role' does not exist|the server refused role 'no_such_role'",
    ),
]
MALFORMED = [
    ("postgresql://app:s3cret@db:port/app", "'postgresql://app:***@db:port/app'"),
    ("db.example.com:5432/app", "not a Postgres URL: 'db.example.com:5432/app'"),
    ("postgresql://app:s3cret@db/app?sslmod=require", 'invalid URI query parameter: "sslmod"'),
]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    return subprocess.run(
        [sys.executable, "-m", "eventstore", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def assert_one_line(err: str, expected: str) -> None:
    """Checks one line of error output matching the regular expression ``expected``."""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(expected, err), err


@pytest.mark.parametrize(("case", "wrong", "expected"), WRONG, ids=[w[0] for w in WRONG])
@pytest.mark.parametrize("command", ["check", "migrate", "streams", "read"])
def test_the_cli_names_the_cause_in_one_line(
    eventstore_database_url: str, case: str, wrong: Mutate, expected: str, command: str
) -> None:
    args = [command, "s-1"] if command == "read" else [command]
    done = cli(*args, "--url", wrong(eventstore_database_url))
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert_one_line(done.stderr, expected)


@pytest.mark.parametrize(("url", "expected"), MALFORMED)
@pytest.mark.parametrize("command", ["check", "migrate", "streams"])
def test_the_cli_shows_a_malformed_url_masked(url: str, expected: str, command: str) -> None:
    done = cli(command, "--url", url)
    assert done.returncode == EXIT_ERROR, done.stderr
    assert_one_line(done.stderr, re.escape(expected))
    assert "s3cret" not in done.stderr


PERMANENT = WRONG[1:]  # a missing database or role: waiting cannot help


@pytest.mark.parametrize(("case", "wrong", "expected"), PERMANENT, ids=[w[0] for w in PERMANENT])
def test_the_sync_store_names_a_wrong_url_without_waiting_for_the_pool(
    eventstore_database_url: str, case: str, wrong: Mutate, expected: str
) -> None:
    store = PostgresEventStore(
        wrong(eventstore_database_url), registry=EventRegistry(), connect_timeout=5.0
    )
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=expected) as raised:
        store.open()
    assert time.monotonic() - started < 2.5  # not the pool's 5 s timeout
    assert "\n" not in str(raised.value)
    assert raised.value.__cause__ is not None  # the driver's error, for the logs


@pytest.mark.parametrize(("case", "wrong", "expected"), PERMANENT, ids=[w[0] for w in PERMANENT])
async def test_the_async_store_names_a_wrong_url_without_waiting_for_the_pool(
    eventstore_database_url: str, case: str, wrong: Mutate, expected: str
) -> None:
    store = AsyncPostgresEventStore(
        wrong(eventstore_database_url), registry=EventRegistry(), connect_timeout=5.0
    )
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=expected):
        async with store:
            pass
    assert time.monotonic() - started < 2.5


def test_a_refused_port_gets_the_pool_wait_then_names_the_cause(
    eventstore_database_url: str,
) -> None:
    # A server still starting refuses connections for a moment: the store waits for it
    # as long as connect_timeout, then says what it met instead of "no connection in time".
    store = PostgresEventStore(
        _replace(eventstore_database_url, port="1"), registry=EventRegistry(), connect_timeout=1.0
    )
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match=r"connection refused at 127\.0\.0\.1:1"):
        store.open()
    assert time.monotonic() - started >= 0.9


async def test_a_refused_port_names_the_cause_async(eventstore_database_url: str) -> None:
    store = AsyncPostgresEventStore(
        _replace(eventstore_database_url, port="1"), registry=EventRegistry(), connect_timeout=1.0
    )
    with pytest.raises(DatabaseUnavailableError, match=r"connection refused at 127\.0\.0\.1:1"):
        await store.open()


@pytest.mark.parametrize(("case", "wrong", "expected"), WRONG, ids=[w[0] for w in WRONG])
def test_migrate_and_inspection_name_the_cause(
    eventstore_database_url: str, case: str, wrong: Mutate, expected: str
) -> None:
    url = wrong(eventstore_database_url)
    for call in (
        lambda: migrate.upgrade(url),
        lambda: migrate.is_up_to_date(url),
        lambda: list_streams(url),
    ):
        with pytest.raises(DatabaseUnavailableError, match=expected):
            call()


@pytest.mark.parametrize(("url", "expected"), MALFORMED)
def test_a_malformed_url_is_a_configuration_error_at_construction(url: str, expected: str) -> None:
    for make in (PostgresEventStore, AsyncPostgresEventStore):
        with pytest.raises(ConfigurationError) as raised:
            make(url, registry=EventRegistry())
        assert expected in str(raised.value)
        assert "s3cret" not in str(raised.value)
    with pytest.raises(ConfigurationError) as raised:
        migrate.upgrade(url)
    assert "s3cret" not in str(raised.value)
