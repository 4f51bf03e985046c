"""User-caused and infrastructure failures give typed errors, quickly, with nothing written."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from eventstore import (
    AsyncPostgresEventStore,
    ConfigurationError,
    DatabaseUnavailableError,
    EventRegistry,
    PostgresEventStore,
    SchemaNotMigratedError,
)
from eventstore.pytest_plugin import create_database, drop_database
from tests.support import Deposited

DEP = Deposited(amount=1, currency="EUR")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never answers: a hung or firewalled database."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_refused_connection_is_a_typed_error(eventstore_registry: EventRegistry) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    store = PostgresEventStore(url, registry=eventstore_registry, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        store.append("s", DEP)
    assert time.monotonic() - started < 10


def test_silent_server_times_out_with_a_typed_error(
    eventstore_registry: EventRegistry, silent_server: int
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_server}/nowhere"
    store = PostgresEventStore(url, registry=eventstore_registry, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailableError):
        store.stream_info("s")
    assert time.monotonic() - started < 10


async def test_async_unreachable_database_is_a_typed_error(
    eventstore_registry: EventRegistry, silent_server: int
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_server}/nowhere"
    store = AsyncPostgresEventStore(url, registry=eventstore_registry, connect_timeout=1)
    with pytest.raises(DatabaseUnavailableError):
        await store.append("s", DEP)


def test_a_store_recovers_once_the_database_answers(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    # The first attempt fails against a dead port; the same store object is not poisoned.
    store = PostgresEventStore(eventstore_database_url, registry=eventstore_registry)
    store._url = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    store._connect_timeout = 1
    with pytest.raises(DatabaseUnavailableError):
        store.open()
    store._url = eventstore_database_url
    with store:
        assert store.append("s", DEP).last_version == 1


def test_missing_tables_say_to_migrate(
    eventstore_server_url: str, eventstore_registry: EventRegistry
) -> None:
    url = create_database(eventstore_server_url, "eventstore_unmigrated_test")
    try:
        with PostgresEventStore(url, registry=eventstore_registry) as store:
            with pytest.raises(SchemaNotMigratedError, match="eventstore migrate"):
                store.append("s", DEP)
            with pytest.raises(SchemaNotMigratedError):
                list(store.read_stream("s"))
    finally:
        drop_database(eventstore_server_url, "eventstore_unmigrated_test")


def test_bad_configuration_is_a_typed_error(
    eventstore_registry: EventRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTSTORE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="EVENTSTORE_DATABASE_URL"):
        PostgresEventStore(registry=eventstore_registry)
    with pytest.raises(ConfigurationError, match="not a Postgres URL"):
        PostgresEventStore("mysql://x/y", registry=eventstore_registry)
    with pytest.raises(ConfigurationError, match="page_size"):
        PostgresEventStore("postgresql://x/y", registry=eventstore_registry, page_size=0)
