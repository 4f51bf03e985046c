"""Events are append-only in the database itself; a deliberate rewrite has to say so."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from eventstore import EventRegistry, PermissionDeniedError, PostgresEventStore, Snapshot
from eventstore.cli import main
from eventstore.subscriptions import AsyncSubscriptionStore, Subscription, SubscriptionRunner
from tests.support import Deposited

DEP = Deposited(amount=1, currency="EUR")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE eventstore.events SET data = '{}'",
        "DELETE FROM eventstore.events",
        "TRUNCATE eventstore.events",
    ],
    ids=["update", "delete", "truncate"],
)
def test_rewriting_events_is_refused_with_a_clear_error(
    postgres_event_store: PostgresEventStore, eventstore_database_url: str, statement: str
) -> None:
    postgres_event_store.append("s", DEP)
    with (
        psycopg.connect(eventstore_database_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"),
    ):
        conn.execute(statement)
    assert [e.version for e in postgres_event_store.read_stream("s")] == [1]


def test_a_rewrite_that_says_so_in_its_transaction_goes_through(
    postgres_event_store: PostgresEventStore, eventstore_database_url: str
) -> None:
    postgres_event_store.append("s", DEP)
    with psycopg.connect(eventstore_database_url) as conn:
        conn.execute("SET LOCAL eventstore.allow_rewrite = 'on'")
        conn.execute("DELETE FROM eventstore.events")
    assert list(postgres_event_store.read_stream("s")) == []
    postgres_event_store.append("s", DEP)
    with (
        psycopg.connect(eventstore_database_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),  # only for that transaction
    ):
        conn.execute("DELETE FROM eventstore.events")


def test_a_snapshot_from_before_a_rewind_is_not_trusted_after_new_appends(
    eventstore_database_url: str,
) -> None:
    """A restore rewinds the stream; new appends reach the snapshot's version again."""
    from eventstore import Repository
    from eventstore.demo.bank import Account, registry

    with PostgresEventStore(eventstore_database_url, registry=registry) as store:
        repo = Repository(store, Account, snapshot_every=3)
        repo.update("a", lambda acct: acct.open("ann"), create=True)
        repo.update("a", lambda acct: acct.deposit(100))
        repo.update("a", lambda acct: acct.deposit(100))  # snapshot at 3: balance 200
        old = store.load_snapshot(repo.stream_id_for("a"))
        assert old is not None and old.version == 3
        with psycopg.connect(eventstore_database_url) as conn:  # the restore, by hand
            conn.execute("SET LOCAL eventstore.allow_rewrite = 'on'")
            conn.execute("DELETE FROM eventstore.events WHERE version > 1")
            conn.execute("UPDATE eventstore.streams SET version = 1")
        repo.update("a", lambda acct: acct.deposit(5))
        repo.update("a", lambda acct: acct.deposit(5))  # version 3 again, other events
        loaded = repo.get("a")
        assert (loaded.version, loaded.balance) == (3, 10)
        new = store.load_snapshot(repo.stream_id_for("a"))
        assert new is not None and new.event_id != old.event_id  # replaced, not kept


@pytest.fixture
def app_role_url(eventstore_database_url: str) -> Iterator[str]:
    """Yields a URL connecting as a fresh role given exactly `eventstore grants`."""
    role, password = f"app_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
    assert main(["grants", role, "--apply", "--url", eventstore_database_url]) == 0
    parts = urlsplit(eventstore_database_url)
    netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
    yield urlunsplit(parts._replace(netloc=netloc))
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_the_application_role_appends_reads_and_subscribes_but_cannot_rewrite(
    app_role_url: str, eventstore_registry: EventRegistry
) -> None:
    with PostgresEventStore(app_role_url, registry=eventstore_registry) as store:
        result = store.append("acct-1", [DEP, DEP])
        third = store.append("acct-1", DEP, expected_version=2)
        assert [e.version for e in store.read_stream("acct-1")] == [1, 2, 3]
        store.save_snapshot(Snapshot("acct-1", 3, "Account", 1, "{}", third.event_ids[0]))
        assert store.load_snapshot("acct-1") is not None
    seen: list[int] = []
    sub = Subscription("app", lambda batch, conn: seen.extend(e.version for e in batch.events))
    runner = SubscriptionRunner([sub], registry=eventstore_registry, url=app_role_url)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    async with AsyncSubscriptionStore(app_role_url, registry=eventstore_registry) as subs:
        await subs.wait_for("app", result, timeout=20)
        await subs.wait_until_caught_up("app", timeout=20)
    stop.set()
    await task
    assert seen == [1, 2, 3]
    for statement in [
        "UPDATE eventstore.events SET data = '{}'",
        "DELETE FROM eventstore.events",
        "TRUNCATE eventstore.events",
    ]:
        with (
            psycopg.connect(app_role_url, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"),
        ):
            conn.execute(statement)


def test_a_missing_privilege_is_a_typed_error_naming_it(
    app_role_url: str, eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    role = urlsplit(app_role_url).username
    assert role is not None
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON eventstore.events FROM {}").format(
            sql.Identifier(role)
        ))  # fmt: skip
    with (
        PostgresEventStore(app_role_url, registry=eventstore_registry) as store,
        pytest.raises(PermissionDeniedError, match="permission denied for table events"),
    ):
        store.append("acct-1", DEP)
