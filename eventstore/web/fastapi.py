"""The FastAPI integration: a lifespan, per-request sessions, headers and error handlers.

Needs the ``fastapi`` extra (``pip install 'eventkeeper[fastapi]'``); the pieces it builds
on, in `eventstore.web`, need no framework::

    store = AsyncPostgresEventStore(url, registry=registry)
    engine = create_async_engine(url)  # postgresql+psycopg://...
    app = FastAPI(lifespan=eventstore_lifespan(store, engine=engine))
    install_error_handlers(app)
    app.add_middleware(MessageContextMiddleware)

    @app.post("/accounts/{account_id}/deposits")
    async def deposit(account_id: str, body: Deposit, store: Store, session: Session,
                      if_match: IfMatch, key: IdempotencyKey, response: Response) -> ...:
        result = await AsyncRepository(store, Account).update(
            account_id, lambda a: a.deposit(body.amount),
            expected_version=if_match, idempotency_key=key, conn=session)
        set_etag(response, result.aggregate.version)

- `eventstore_lifespan` opens the store when the app starts and closes it (and disposes
  the engine) when it stops; handlers get the store through the `Store` dependency.
- `Session` is an SQLAlchemy `AsyncSession` per request, inside a transaction that commits
  when the handler returns, before the response is sent, and rolls back when it raises:
  pass it as ``conn=`` so events and your own tables commit together.
- `IfMatch` is the ``If-Match`` header as an expected version, `IdempotencyKey` the
  ``Idempotency-Key`` header; `set_etag` sets a response's ``ETag`` from a version.
- `install_error_handlers` answers the store's errors as `eventstore.web.errors` maps
  them: 409 (with expected and actual), 404, 422, 503 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from eventstore.errors import ConfigurationError, EventStoreError
from eventstore.store import AsyncEventStore
from eventstore.web.errors import PROBLEM_CONTENT_TYPE, problem_for
from eventstore.web.etag import etag_for, version_from_if_match
from eventstore.web.idempotency import idempotency_key_from
from eventstore.web.middleware import MessageContextMiddleware

__all__ = [
    "IdempotencyKey",
    "IfMatch",
    "MessageContextMiddleware",
    "Session",
    "Store",
    "eventstore_lifespan",
    "get_session",
    "get_store",
    "install_error_handlers",
    "set_etag",
]

_STORE = "eventstore"
_ENGINE = "eventstore_engine"


def eventstore_lifespan(
    store: AsyncEventStore, *, engine: AsyncEngine | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[dict[str, Any]]]:
    """Returns a lifespan that opens ``store`` at startup and closes it at shutdown.

    The store (and ``engine``, for the `Session` dependency) reach handlers through the
    lifespan state, and through ``app.state`` for code that runs the lifespan context
    itself (``app.router.lifespan_context(app)`` in tests). A store that cannot connect
    fails the startup.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        try:
            async with store:
                setattr(app.state, _STORE, store)
                setattr(app.state, _ENGINE, engine)
                yield {_STORE: store, _ENGINE: engine}
        finally:
            setattr(app.state, _STORE, None)
            setattr(app.state, _ENGINE, None)
            if engine is not None:
                await engine.dispose()

    return lifespan


def get_store(request: Request) -> AsyncEventStore:
    """Returns the store `eventstore_lifespan` opened (a dependency)."""
    store = getattr(request.state, _STORE, None) or getattr(request.app.state, _STORE, None)
    if store is None:
        raise ConfigurationError("no event store: create the app with eventstore_lifespan(...)")
    return store  # type: ignore[no-any-return]


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """Yields a session in a transaction that commits when the handler returns (a dependency).

    When the handler raises, the transaction rolls back. Use it through `Session`, which
    ends it before the response is sent, so a failed commit is never answered with a 2xx.
    """
    engine = getattr(request.state, _ENGINE, None) or getattr(request.app.state, _ENGINE, None)
    if engine is None:
        raise ConfigurationError("no engine: pass engine= to eventstore_lifespan(...)")
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        yield session


def _if_match(if_match: Annotated[str | None, Header()] = None) -> int | None:
    return version_from_if_match(if_match)


def _idempotency_key(
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> str | None:
    return idempotency_key_from(idempotency_key)


Store = Annotated[AsyncEventStore, Depends(get_store)]
Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
IfMatch = Annotated[int | None, Depends(_if_match)]
IdempotencyKey = Annotated[str | None, Depends(_idempotency_key)]


def set_etag(response: Response, version: int) -> None:
    """Sets the response's ``ETag`` to the stream version."""
    response.headers["ETag"] = etag_for(version)


def install_error_handlers(app: FastAPI, *, retry_after: int = 1) -> None:
    """Answers the store's errors with their HTTP status and a problem document.

    Errors `eventstore.web.errors.problem_for` does not map (bugs, misconfiguration) go on
    to FastAPI's own handling (a 500).
    """

    async def handle(request: Request, exc: Exception) -> Response:
        problem = problem_for(exc, retry_after=retry_after)
        if problem is None:
            raise exc
        return JSONResponse(
            problem.body(),
            status_code=problem.status,
            headers=dict(problem.headers),
            media_type=PROBLEM_CONTENT_TYPE,
        )

    app.add_exception_handler(EventStoreError, handle)
