"""The carts' API under a bounded load: one hot cart, many concurrent writers.

1,200+ requests at a concurrency of 12, all on one cart: plain adds (the repository
serialises them), adds guarded by ``If-Match`` (a 409 when another write got in between),
deliberately stale ones (always a 409), and adds retried with their ``Idempotency-Key``.
No update may be lost: the cart, its version and the summary table must add up to the
successful requests exactly, and every refusal must be a 409 that names both versions.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import psycopg

CONCURRENCY = 12
ROUNDS = 100  # each round sends 12 requests or more: 1,200+ in all
BUDGET_SECONDS = 30.0


@dataclass
class Tally:
    requests: int = 0
    added: int = 0  # quantity added by successful, first-time requests
    appends: int = 0  # successful, first-time writes (one event each)
    statuses: Counter[int] = field(default_factory=Counter)
    conflicts: list[dict[str, object]] = field(default_factory=list)
    repeats: int = 0

    def record(self, response: httpx.Response, quantity: int) -> None:
        self.requests += 1
        self.statuses[response.status_code] += 1
        if response.status_code == 409:
            self.conflicts.append(response.json())
        elif response.status_code == 200 and not response.json()["repeated"]:
            self.added += quantity
            self.appends += 1


async def plain_add(client: httpx.AsyncClient, tally: Tally, n: int) -> None:
    quantity = 1 + n % 3
    response = await client.post(
        "/carts/hot/items", json={"sku": f"s{n % 7}", "quantity": quantity}
    )
    tally.record(response, quantity)


async def guarded_add(client: httpx.AsyncClient, tally: Tally, n: int) -> None:
    shown = await client.get("/carts/hot")
    tally.requests += 1
    response = await client.post(
        "/carts/hot/items",
        json={"sku": "g", "quantity": 1},
        headers={"If-Match": shown.headers["etag"]},
    )
    tally.record(response, 1)


async def stale_add(client: httpx.AsyncClient, tally: Tally, n: int) -> None:
    response = await client.post(
        "/carts/hot/items", json={"sku": "x", "quantity": 1}, headers={"If-Match": '"1"'}
    )
    tally.record(response, 1)


async def retried_add(client: httpx.AsyncClient, tally: Tally, n: int) -> None:
    headers = {"Idempotency-Key": f"retry-{n}"}
    body = {"sku": "r", "quantity": 2}
    first = await client.post("/carts/hot/items", json=body, headers=headers)
    tally.record(first, 2)
    again = await client.post("/carts/hot/items", json=body, headers=headers)
    tally.record(again, 2)
    assert again.status_code == 200, again.text
    assert again.json()["repeated"] is True
    assert {**first.json(), "repeated": True} == again.json()
    tally.repeats += 1


KINDS = [plain_add] * 6 + [guarded_add] * 3 + [stale_add, retried_add, retried_add]


async def test_no_update_is_lost_and_every_conflict_is_a_409(
    client: httpx.AsyncClient, cart_database_url: str
) -> None:
    assert (await client.put("/carts/hot", json={"customer": "everyone"})).status_code == 201
    tally = Tally(requests=1)
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for n in range(ROUNDS * len(KINDS)):
        jobs.put_nowait(n)

    async def worker() -> None:
        while not jobs.empty():
            n = jobs.get_nowait()
            await KINDS[n % len(KINDS)](client, tally, n)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.monotonic() - started

    assert tally.requests >= 1000
    assert elapsed < BUDGET_SECONDS, f"{tally.requests} requests took {elapsed:.1f} s"
    assert set(tally.statuses) <= {200, 409}, tally.statuses
    assert tally.conflicts, "the load made no conflict: the 409 path went untested"
    for problem in tally.conflicts:
        assert isinstance(problem["expected"], int) and isinstance(problem["actual"], int)
        assert problem["actual"] > problem["expected"]
    assert tally.repeats == ROUNDS * KINDS.count(retried_add)

    cart = (await client.get("/carts/hot")).json()
    assert cart["item_count"] == tally.added
    assert cart["version"] == 1 + tally.appends
    with psycopg.connect(cart_database_url) as conn:
        row = conn.execute(
            "SELECT item_count, version FROM cart_summaries WHERE cart_id = 'hot'"
        ).fetchone()
    assert row == (tally.added, 1 + tally.appends)
