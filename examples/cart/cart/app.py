"""The HTTP API of the carts: FastAPI, the repository, and eventstore.web.fastapi.

- ``PUT /carts/{id}`` opens a cart (create-only: 409 when it exists);
- ``GET /carts/{id}`` returns it, with its version as ``ETag`` (``?version=N``: as it was);
- ``POST /carts/{id}/items``, ``DELETE /carts/{id}/items/{sku}``, ``POST /carts/{id}/checkout``
  change it, honouring ``If-Match`` (409 when stale) and ``Idempotency-Key`` (a retried
  request returns the original result and appends nothing).

Every change runs in one transaction per request (the `Session` dependency) that also
updates the ``cart_summaries`` table. Carts are hot aggregates here (many tabs, many
devices): the repository serialises writers of one cart instead of retrying them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from cart.domain import REGISTRY, Cart, CartError
from cart.read_model import save_summary
from eventstore import AsyncEventStore, AsyncPostgresEventStore, AsyncRepository, CommandResult
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


class Opening(BaseModel):
    """The body of ``PUT /carts/{id}``."""

    customer: str


class Adding(BaseModel):
    """The body of ``POST /carts/{id}/items``."""

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = 1


class CartView(BaseModel):
    """A cart as the API shows it."""

    cart_id: str
    customer: str
    items: dict[str, int]
    item_count: int
    checked_out: bool
    version: int
    repeated: bool = False


def view(cart: Cart, *, repeated: bool = False) -> CartView:
    """Returns the API's view of a cart."""
    return CartView(
        cart_id=cart.id,
        customer=cart.customer,
        items=cart.items,
        item_count=cart.item_count,
        checked_out=cart.checked_out,
        version=cart.version,
        repeated=repeated,
    )


_REPOSITORIES: weakref.WeakKeyDictionary[AsyncEventStore, AsyncRepository[Cart]] = (
    weakref.WeakKeyDictionary()
)


def carts(store: AsyncEventStore) -> AsyncRepository[Cart]:
    """Returns the carts' repository: writers of one cart queue on its lock.

    One per store for the app's life, not one per request: a serialising repository keeps
    copies of the carts it committed last, so the next command on a busy cart only
    catches up instead of loading it again.
    """
    repository = _REPOSITORIES.get(store)
    if repository is None:
        repository = AsyncRepository(store, Cart, serialize=True, snapshot_every=50)
        _REPOSITORIES[store] = repository
    return repository


async def answer(
    result: CommandResult[Cart], session: AsyncSession, response: Response
) -> CartView:
    """Updates the summary (unless the request is a repeat) and sets the ``ETag``."""
    cart = result.aggregate
    repeated = result.append is not None and result.append.repeated
    if result.append is not None and not repeated:
        await save_summary(session, cart.id, cart.item_count, cart.version)
    set_etag(response, cart.version)
    return view(cart, repeated=repeated)


def create_app(database_url: str) -> FastAPI:
    """Builds the app on the database at ``database_url`` (migrated with its alembic tree)."""
    store = AsyncPostgresEventStore(database_url, registry=REGISTRY, max_size=20)
    engine = create_async_engine(sqlalchemy_url(database_url), pool_size=20, max_overflow=0)
    app = FastAPI(title="carts", lifespan=eventstore_lifespan(store, engine=engine))
    install_error_handlers(app)
    app.add_middleware(MessageContextMiddleware)

    @app.exception_handler(CartError)
    async def refused(request: Request, exc: CartError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    async def change(
        cart_id: str,
        command: Callable[[Cart], object],
        store: AsyncEventStore,
        session: AsyncSession,
        if_match: int | None,
        key: str | None,
        response: Response,
    ) -> CartView:
        result = await carts(store).update(
            cart_id, command, expected_version=if_match, idempotency_key=key, conn=session
        )
        return await answer(result, session, response)

    @app.put("/carts/{cart_id}", status_code=201)
    async def open_cart(
        cart_id: str,
        body: Opening,
        store: Store,
        session: Session,
        key: IdempotencyKey,
        response: Response,
    ) -> CartView:
        result = await carts(store).create(
            cart_id, lambda c: c.open(body.customer), idempotency_key=key, conn=session
        )
        return await answer(result, session, response)

    @app.get("/carts/{cart_id}")
    async def get_cart(
        cart_id: str, store: Store, response: Response, version: int | None = None
    ) -> CartView:
        cart = await carts(store).get(cart_id, version=version)
        set_etag(response, cart.version)
        return view(cart)

    @app.post("/carts/{cart_id}/items")
    async def add_item(
        cart_id: str,
        body: Adding,
        store: Store,
        session: Session,
        if_match: IfMatch,
        key: IdempotencyKey,
        response: Response,
    ) -> CartView:
        def command(cart: Cart) -> None:
            cart.add(body.sku, body.quantity)

        return await change(cart_id, command, store, session, if_match, key, response)

    @app.delete("/carts/{cart_id}/items/{sku}")
    async def remove_item(
        cart_id: str,
        sku: str,
        store: Store,
        session: Session,
        if_match: IfMatch,
        key: IdempotencyKey,
        response: Response,
    ) -> CartView:
        def command(cart: Cart) -> None:
            cart.remove(sku)

        return await change(cart_id, command, store, session, if_match, key, response)

    @app.post("/carts/{cart_id}/checkout")
    async def check_out(
        cart_id: str,
        store: Store,
        session: Session,
        if_match: IfMatch,
        key: IdempotencyKey,
        response: Response,
    ) -> CartView:
        return await change(cart_id, Cart.check_out, store, session, if_match, key, response)

    return app


def app_from_env() -> Any:
    """Returns the app on ``DATABASE_URL``: ``uvicorn --factory cart.app:app_from_env``."""
    import os

    return create_app(os.environ["DATABASE_URL"])
