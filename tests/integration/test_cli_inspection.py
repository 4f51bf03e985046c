"""`eventstore read STREAM` and `eventstore streams`: output, paging, and the index they use."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from eventstore import EventRegistry, PostgresEventStore, migrate
from eventstore.cli import EXIT_NOT_FOUND, EXIT_NOT_MIGRATED, EXIT_OK, main
from eventstore.postgres.inspection import list_streams, stream_query
from eventstore.pytest_plugin import create_database, drop_database
from tests.support import Deposited, make_registry


def append_some(url: str, registry: EventRegistry) -> None:
    with PostgresEventStore(url, registry=registry) as store:
        store.append("account-1", [Deposited(amount=1, currency="EUR")] * 3)
        store.append("account-2", Deposited(amount=2, currency="EUR"))
        store.append("accounting-1", Deposited(amount=3, currency="EUR"))
        store.append("order-1", Deposited(amount=4, currency="EUR"))


def test_read_prints_one_json_object_per_event(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_some(eventstore_database_url, make_registry())
    assert main(["read", "account-1", "--url", eventstore_database_url]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["version"] for e in events] == [1, 2, 3]
    assert events[0]["data"] == {"amount": 1, "currency": "EUR", "note": ""}
    assert events[0]["event_type"] == Deposited.event_type
    assert set(events[0]) >= {"global_position", "event_id", "recorded_at", "metadata"}
    args = ["read", "account-1", "--url", eventstore_database_url, "--backward", "--limit", "2"]
    assert main(args) == EXIT_OK
    assert [json.loads(x)["version"] for x in capsys.readouterr().out.splitlines()] == [3, 2]


def test_read_of_a_missing_stream_exits_5(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["read", "nope-1", "--url", eventstore_database_url]) == EXIT_NOT_FOUND
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "no stream 'nope-1' in schema 'eventstore'\n"


def test_streams_by_category_prefix_and_pages(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_some(eventstore_database_url, make_registry())

    def listed(*args: str) -> list[tuple[str, str]]:
        assert main(["streams", "--url", eventstore_database_url, *args]) == EXIT_OK
        rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
        return [(r[0], r[1]) for r in rows]

    assert listed("--category", "account") == [("account-1", "3"), ("account-2", "1")]
    assert [s for s, _ in listed("--prefix", "account")] == [
        "account-1",
        "account-2",
        "accounting-1",
    ]
    assert [s for s, _ in listed()] == ["account-1", "account-2", "accounting-1", "order-1"]
    assert [s for s, _ in listed("--limit", "2", "--after", "account-1")] == [
        "account-2",
        "accounting-1",
    ]
    assert listed("--prefix", "zzz") == []


def test_streams_on_an_unmigrated_database_exits_4(
    eventstore_server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"eventstore_empty_{uuid.uuid4().hex[:12]}"
    url = create_database(eventstore_server_url, name)
    try:
        assert main(["streams", "--url", url]) == EXIT_NOT_MIGRATED
    finally:
        drop_database(eventstore_server_url, name)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eventstore migrate" in err and "alembic upgrade heads" in err


def test_a_prefix_listing_is_an_index_scan_of_the_primary_key(
    eventstore_database_url: str,
) -> None:
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        for category in ("account", "order", "invoice"):
            conn.execute(
                "INSERT INTO eventstore.streams (stream_id, version) "
                "SELECT %s || '-' || g, 1 FROM generate_series(1, 20000) g",
                [category],
            )
        conn.execute("ANALYZE eventstore.streams")
        statement, params = stream_query("eventstore", "order-", code_point_order=True)
        plan = "\n".join(
            str(row[0])
            for row in conn.execute(sql.SQL("EXPLAIN ") + statement, [*params, 100]).fetchall()
        )
    assert "Index Scan using streams_pkey" in plan, plan
    assert "stream_id >= 'order-'::text" in plan and "stream_id < 'order.'::text" in plan, plan
    assert "Seq Scan" not in plan and "Sort" not in plan, plan
    rows = list_streams(eventstore_database_url, prefix="order-1999", limit=1000)
    assert [r.stream_id for r in rows] == ["order-1999", *(f"order-1999{d}" for d in range(10))]


@pytest.fixture
def icu_database(eventstore_server_url: str) -> Iterator[str]:
    """A database whose default collation is linguistic (ICU en-US), migrated."""
    name = f"eventstore_icu_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(eventstore_server_url, autocommit=True) as conn:
        try:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu "
                    "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
                ).format(sql.Identifier(name))
            )
        except psycopg.errors.FeatureNotSupported as exc:  # the embedded server's build
            pytest.skip(f"this Postgres has no ICU collations: {exc}")
    url = eventstore_server_url.rsplit("/", 1)[0] + "/" + name
    try:
        migrate.upgrade(url)
        yield url
    finally:
        drop_database(eventstore_server_url, name)


def test_under_a_linguistic_collation_the_listing_is_still_exact(icu_database: str) -> None:
    ids = ["a-b", "a.c", "ab", "a-", "A-x", "a-z", "a"]
    with psycopg.connect(icu_database, autocommit=True) as conn:
        for stream_id in ids:
            conn.execute(
                "INSERT INTO eventstore.streams (stream_id, version) VALUES (%s, 1)", [stream_id]
            )
    found = {r.stream_id for r in list_streams(icu_database, prefix="a-")}
    assert found == {s for s in ids if s.startswith("a-")}
