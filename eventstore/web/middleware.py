"""Middleware that puts each request's correlation id and traceparent in the message context.

Events appended while a request is handled then carry them in their metadata (see
`eventstore.context.message_context`), with no plumbing in the handlers. It works with any
ASGI application (FastAPI, Starlette, Litestar, Quart...), and its twin with any WSGI
application (Flask, Django...)::

    app = MessageContextMiddleware(app)          # ASGI
    app = WSGIMessageContextMiddleware(app)      # WSGI

The correlation id comes from the ``X-Correlation-ID`` header (or ``X-Request-ID``), or is
a new uuid7 when the request has neither; the response carries it back in
``X-Correlation-ID``. A ``traceparent`` header is passed on as it is (an OpenTelemetry
span, when one is active, is used by `current_metadata` otherwise).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from types import TracebackType
from typing import Any, Final
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from eventstore.context import message_context
from eventstore.events import uuid7

__all__ = ["CORRELATION_ID_HEADER", "MessageContextMiddleware", "WSGIMessageContextMiddleware"]

CORRELATION_ID_HEADER: Final = "X-Correlation-ID"
_CORRELATION: Final = b"x-correlation-id"
_REQUEST_ID: Final = b"x-request-id"
_TRACEPARENT: Final = b"traceparent"
_MAX_HEADER: Final = 200

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MessageContextMiddleware:
    """Runs each HTTP request inside ``message_context(correlation_id=..., traceparent=...)``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        correlation_id = headers.get(_CORRELATION) or headers.get(_REQUEST_ID) or str(uuid7())
        traceparent = headers.get(_TRACEPARENT)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent = list(message.get("headers", []))
                sent.append((_CORRELATION, correlation_id.encode("latin-1")))
                message["headers"] = sent
            await send(message)

        with message_context(correlation_id=correlation_id, traceparent=traceparent):
            await self.app(scope, receive, send_with_id)


class WSGIMessageContextMiddleware:
    """Runs each WSGI request inside ``message_context(correlation_id=..., traceparent=...)``.

    The context covers the application's call, where frameworks such as Flask and Django
    run the view; a response body produced lazily, after the call returns, runs outside it.
    """

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        correlation_id = (
            _clean(environ.get("HTTP_X_CORRELATION_ID"))
            or _clean(environ.get("HTTP_X_REQUEST_ID"))
            or str(uuid7())
        )
        traceparent = _clean(environ.get("HTTP_TRACEPARENT"))

        def start_with_id(
            status: str,
            headers: list[tuple[str, str]],
            exc_info: tuple[type[BaseException], BaseException, TracebackType]
            | tuple[None, None, None]
            | None = None,
        ) -> Callable[[bytes], object]:
            return start_response(
                status, [*headers, (CORRELATION_ID_HEADER, correlation_id)], exc_info
            )

        with message_context(correlation_id=correlation_id, traceparent=traceparent):
            return self.app(environ, start_with_id)


def _clean(value: object) -> str | None:
    """Returns a header value stripped, or None when empty, too long or not printable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if text and len(text) <= _MAX_HEADER and text.isprintable() else None


def _headers(scope: Scope) -> dict[bytes, str]:
    """Returns the request's headers of interest, decoded, stripped and bounded in length."""
    wanted = {_CORRELATION, _REQUEST_ID, _TRACEPARENT}
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers", []):
        key = bytes(name).lower()
        if key in wanted and key not in found:
            text = _clean(bytes(value).decode("latin-1"))
            if text is not None:
                found[key] = text
    return found
