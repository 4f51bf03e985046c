"""The FastAPI integration on Postgres, through httpx with the lifespan running."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import create_async_engine

from eventstore import (
    AsyncEventStore,
    AsyncInMemoryEventStore,
    AsyncPostgresEventStore,
    AsyncRepository,
    DatabaseUnavailableError,
    EventRegistry,
)
from eventstore.demo.bank import (
    Account,
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
)
from eventstore.postgres.connections import sqlalchemy_url
from eventstore.web.fastapi import (
    IdempotencyKey,
    IfMatch,
    MessageContextMiddleware,
    Session,
    Store,
    eventstore_lifespan,
    install_error_handlers,
    set_etag,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return EventRegistry([AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed])


class Amount(BaseModel):
    amount: int
    fail_after: bool = False


class Boom(Exception):
    pass


def build_app(store: AsyncEventStore, url: str | None) -> FastAPI:
    engine = None if url is None else create_async_engine(sqlalchemy_url(url))
    app = FastAPI(lifespan=eventstore_lifespan(store, engine=engine))
    install_error_handlers(app, retry_after=3)
    app.add_middleware(MessageContextMiddleware)

    @app.post("/accounts/{account_id}", status_code=201)
    async def open_account(account_id: str, store: Store, response: Response) -> dict[str, Any]:
        result = await AsyncRepository(store, Account).create(account_id, lambda a: a.open("ann"))
        set_etag(response, result.aggregate.version)
        return {"version": result.aggregate.version}

    @app.get("/accounts/{account_id}")
    async def get_account(
        account_id: str, store: Store, response: Response, version: int | None = None
    ) -> dict[str, Any]:
        account = await AsyncRepository(store, Account).get(account_id, version=version)
        set_etag(response, account.version)
        return {"balance": account.balance, "version": account.version}

    @app.post("/accounts/{account_id}/deposits")
    async def deposit(
        account_id: str,
        body: Amount,
        store: Store,
        session: Session,
        if_match: IfMatch,
        key: IdempotencyKey,
        response: Response,
    ) -> dict[str, Any]:
        result = await AsyncRepository(store, Account).update(
            account_id,
            lambda a: a.deposit(body.amount),
            expected_version=if_match,
            idempotency_key=key,
            conn=session,
        )
        await session.execute(
            sa.text("INSERT INTO audit (account_id, amount) VALUES (:a, :n)"),
            {"a": account_id, "n": body.amount},
        )
        if body.fail_after:
            raise Boom
        set_etag(response, result.aggregate.version)
        assert result.append is not None
        return {
            "version": result.aggregate.version,
            "balance": result.aggregate.balance,
            "positions": list(result.append.positions),
            "repeated": result.append.repeated,
        }

    @app.get("/down")
    async def down() -> None:
        raise DatabaseUnavailableError("the server cannot be reached")

    return app


@pytest.fixture
async def client(
    eventstore_database_url: str, eventstore_registry: EventRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE audit (account_id text, amount int)")
    store = AsyncPostgresEventStore(eventstore_database_url, registry=eventstore_registry)
    app = build_app(store, eventstore_database_url)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def audit_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT account_id, amount FROM audit ORDER BY amount").fetchall()


async def test_a_create_and_a_read_carry_the_version_as_etag(client: httpx.AsyncClient) -> None:
    created = await client.post("/accounts/1")
    assert (created.status_code, created.headers["etag"]) == (201, '"1"')
    read = await client.get("/accounts/1")
    assert read.json() == {"balance": 0, "version": 1} and read.headers["etag"] == '"1"'


async def test_a_second_create_is_a_409(client: httpx.AsyncClient) -> None:
    await client.post("/accounts/1")
    again = await client.post("/accounts/1")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["expected"] == "no stream" and again.json()["actual"] == 1


async def test_if_match_guards_a_write(client: httpx.AsyncClient) -> None:
    await client.post("/accounts/1")
    ok = await client.post("/accounts/1/deposits", json={"amount": 5}, headers={"If-Match": '"1"'})
    assert (ok.status_code, ok.headers["etag"]) == (200, '"2"')
    stale = await client.post(
        "/accounts/1/deposits", json={"amount": 5}, headers={"If-Match": '"1"'}
    )
    assert stale.status_code == 409
    assert (stale.json()["expected"], stale.json()["actual"]) == (1, 2)
    assert stale.headers["etag"] == '"2"'
    assert (await client.get("/accounts/1")).json()["balance"] == 5


async def test_a_bad_if_match_is_a_422_and_a_missing_account_a_404(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/accounts/1")
    bad = await client.post("/accounts/1/deposits", json={"amount": 5}, headers={"If-Match": "1"})
    assert bad.status_code == 422 and "If-Match" in bad.json()["detail"]
    missing = await client.post("/accounts/9/deposits", json={"amount": 5})
    assert missing.status_code == 404 and missing.json()["aggregate_id"] == "9"
    assert (await client.get("/accounts/1", params={"version": 4})).status_code == 404


async def test_an_unavailable_database_is_a_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    down = await client.get("/down")
    assert (down.status_code, down.headers["retry-after"]) == (503, "3")


async def test_a_retried_post_with_its_key_returns_the_original_result(
    client: httpx.AsyncClient, eventstore_database_url: str
) -> None:
    await client.post("/accounts/1")
    headers = {"Idempotency-Key": "pay-1"}
    first = await client.post("/accounts/1/deposits", json={"amount": 7}, headers=headers)
    await client.post("/accounts/1/deposits", json={"amount": 1})
    again = await client.post("/accounts/1/deposits", json={"amount": 7}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert {**first.json(), "repeated": True} == again.json()
    assert again.json()["repeated"] is True and again.headers["etag"] == '"2"'
    assert (await client.get("/accounts/1")).json() == {"balance": 8, "version": 3}
    # The handler's own write is not idempotent here (it runs again); the events are.
    assert [r[1] for r in audit_rows(eventstore_database_url)] == [1, 7, 7]


async def test_the_session_commits_with_the_request_or_not_at_all(
    client: httpx.AsyncClient, eventstore_database_url: str
) -> None:
    await client.post("/accounts/1")
    failed = await client.post("/accounts/1/deposits", json={"amount": 5, "fail_after": True})
    assert failed.status_code == 500
    assert audit_rows(eventstore_database_url) == []
    assert (await client.get("/accounts/1")).json()["version"] == 1
    ok = await client.post("/accounts/1/deposits", json={"amount": 5})
    assert ok.status_code == 200
    assert audit_rows(eventstore_database_url) == [("1", 5)]


async def test_events_carry_the_requests_correlation_id_and_traceparent(
    client: httpx.AsyncClient, eventstore_database_url: str, eventstore_registry: EventRegistry
) -> None:
    await client.post(
        "/accounts/1", headers={"X-Correlation-ID": "c-42", "traceparent": TRACEPARENT}
    )
    answered = await client.post("/accounts/1/deposits", json={"amount": 1})
    async with AsyncPostgresEventStore(
        eventstore_database_url, registry=eventstore_registry
    ) as store:
        events = [e async for e in store.read_stream("account-1")]
    assert (events[0].metadata.correlation_id, events[0].metadata.traceparent) == (
        "c-42",
        TRACEPARENT,
    )
    assert events[1].metadata.correlation_id == answered.headers["x-correlation-id"]


class RecordingStore(AsyncInMemoryEventStore):
    def __init__(self, registry: EventRegistry) -> None:
        super().__init__(registry)
        self.calls: list[str] = []

    async def __aenter__(self) -> RecordingStore:
        self.calls.append("open")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.calls.append("close")


async def test_the_lifespan_opens_and_closes_the_store(eventstore_registry: EventRegistry) -> None:
    store = RecordingStore(eventstore_registry)
    app = build_app(store, None)
    async with app.router.lifespan_context(app):
        assert store.calls == ["open"]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.post("/accounts/1")).status_code == 201
    assert store.calls == ["open", "close"]
