"""The carts' API: ETags and If-Match, create-only, idempotent retries, errors, migrations."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from cart.domain import REGISTRY

from eventstore import AsyncPostgresEventStore


async def open_cart(client: httpx.AsyncClient, cart_id: str = "c1") -> httpx.Response:
    return await client.put(f"/carts/{cart_id}", json={"customer": "ann"})


def summary(url: str, cart_id: str = "c1") -> tuple[Any, ...] | None:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT item_count, version FROM cart_summaries WHERE cart_id = %s", [cart_id]
        ).fetchone()


async def test_the_app_tree_migrates_the_event_store_and_the_app(cart_database_url: str) -> None:
    with psycopg.connect(cart_database_url) as conn:
        heads = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                "WHERE table_schema IN ('public', 'eventstore')"
            )
        }
    assert "7c2d9e4f1a0b" in heads and len(heads) == 2
    assert {"public.cart_summaries", "eventstore.events", "eventstore.streams"} <= tables


async def test_a_cart_opens_once_and_shows_its_version_as_etag(client: httpx.AsyncClient) -> None:
    opened = await open_cart(client)
    assert (opened.status_code, opened.headers["etag"]) == (201, '"1"')
    shown = await client.get("/carts/c1")
    assert shown.json()["customer"] == "ann" and shown.headers["etag"] == '"1"'
    again = await open_cart(client)
    assert again.status_code == 409 and again.json()["expected"] == "no stream"


async def test_if_match_turns_a_stale_write_into_a_409(
    client: httpx.AsyncClient, cart_database_url: str
) -> None:
    await open_cart(client)
    added = await client.post(
        "/carts/c1/items", json={"sku": "tea", "quantity": 2}, headers={"If-Match": '"1"'}
    )
    assert (added.status_code, added.json()["item_count"], added.headers["etag"]) == (
        200,
        2,
        '"2"',
    )
    stale = await client.post("/carts/c1/items", json={"sku": "tea"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 409
    assert (stale.json()["expected"], stale.json()["actual"], stale.headers["etag"]) == (
        1,
        2,
        '"2"',
    )
    assert summary(cart_database_url) == (2, 2)


async def test_a_retried_post_returns_the_original_result_and_appends_nothing(
    client: httpx.AsyncClient, cart_database_url: str
) -> None:
    await open_cart(client)
    key = {"Idempotency-Key": "add-tea-1"}
    first = await client.post("/carts/c1/items", json={"sku": "tea", "quantity": 3}, headers=key)
    await client.post("/carts/c1/items", json={"sku": "milk"})
    again = await client.post("/carts/c1/items", json={"sku": "tea", "quantity": 3}, headers=key)
    assert again.status_code == 200 and again.json()["repeated"] is True
    assert {**first.json(), "repeated": True} == again.json()
    assert again.headers["etag"] == '"2"'
    shown = (await client.get("/carts/c1")).json()
    assert (shown["items"], shown["version"]) == ({"tea": 3, "milk": 1}, 3)
    assert summary(cart_database_url) == (4, 3)


async def test_refusals_missing_carts_and_bad_headers(client: httpx.AsyncClient) -> None:
    await open_cart(client)
    assert (
        await client.post("/carts/c1/items", json={"sku": "tea", "quantity": 0})
    ).status_code == 422
    assert (await client.post("/carts/c1/items", json={"quantity": 1})).status_code == 422
    assert (await client.post("/carts/c9/items", json={"sku": "tea"})).status_code == 404
    bad = await client.post("/carts/c1/items", json={"sku": "tea"}, headers={"If-Match": "v1"})
    assert bad.status_code == 422
    assert (await client.delete("/carts/c1/items/tea")).status_code == 422  # not in the cart
    assert (await client.post("/carts/c1/checkout")).status_code == 422  # empty
    await client.post("/carts/c1/items", json={"sku": "tea"})
    assert (await client.post("/carts/c1/checkout")).status_code == 200
    late = await client.post("/carts/c1/items", json={"sku": "tea"})
    assert late.status_code == 422 and "checked out" in late.json()["detail"]


async def test_a_cart_as_it_was(client: httpx.AsyncClient) -> None:
    await open_cart(client)
    for sku in ("tea", "milk", "tea"):
        await client.post("/carts/c1/items", json={"sku": sku})
    await client.delete("/carts/c1/items/tea")
    then = await client.get("/carts/c1", params={"version": 3})
    assert (then.json()["items"], then.headers["etag"]) == ({"tea": 1, "milk": 1}, '"3"')
    assert (await client.get("/carts/c1")).json()["items"] == {"milk": 1}
    assert (await client.get("/carts/c1", params={"version": 9})).status_code == 404


async def test_events_carry_the_requests_correlation_id(
    client: httpx.AsyncClient, cart_database_url: str
) -> None:
    await client.put("/carts/c1", json={"customer": "ann"}, headers={"X-Request-ID": "r-1"})
    async with AsyncPostgresEventStore(cart_database_url, registry=REGISTRY) as store:
        (event,) = [e async for e in store.read_stream("cart-c1")]
    assert event.metadata.correlation_id == "r-1"
