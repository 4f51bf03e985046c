"""The framework-neutral HTTP pieces: ETags, idempotency keys, problems, the middleware."""

from __future__ import annotations

import uuid
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from eventstore import (
    NO_STREAM,
    AggregateNotFoundError,
    DatabaseUnavailableError,
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    TransactionConflictError,
    WrongExpectedVersionError,
)
from eventstore.context import current_metadata
from eventstore.web import (
    MessageContextMiddleware,
    WSGIMessageContextMiddleware,
    etag_for,
    idempotency_key_from,
    problem_for,
    version_from_if_match,
)
from eventstore.web.idempotency import idempotent_event_ids

# --- ETags ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 1, 42, 10**15])
def test_an_etag_names_its_version(version: int) -> None:
    tag = etag_for(version)
    assert tag == f'"{version}"'
    assert version_from_if_match(tag) == version
    assert version_from_if_match(f"W/{tag}") == version
    assert version_from_if_match(f"  {tag} ") == version


@pytest.mark.parametrize("header", [None, "", "*"])
def test_no_if_match_means_no_expected_version(header: str | None) -> None:
    assert version_from_if_match(header) is None


@pytest.mark.parametrize("header", ["7", '"seven"', '"1", "2"', '"-1"', 'W/"x"', '"1'])
def test_an_if_match_that_is_not_one_version_is_refused(header: str) -> None:
    with pytest.raises(InvalidArgumentError, match="If-Match"):
        version_from_if_match(header)


def test_a_negative_version_has_no_etag() -> None:
    with pytest.raises(InvalidArgumentError):
        etag_for(-1)


# --- Idempotency keys ----------------------------------------------------------------------


def test_an_idempotency_key_is_read_from_its_header() -> None:
    assert idempotency_key_from(None) is None
    assert idempotency_key_from(" abc-123 ") == "abc-123"
    assert idempotency_key_from('"quoted key"') == "quoted key"


@pytest.mark.parametrize("header", ["", "  ", '""', "x" * 256, "caf\u00e9", "a\tb"])
def test_an_invalid_idempotency_key_is_refused(header: str) -> None:
    with pytest.raises(InvalidArgumentError, match="Idempotency-Key"):
        idempotency_key_from(header)


def test_idempotent_ids_are_stable_and_distinct() -> None:
    ids = idempotent_event_ids("k", "cart-1", 3)
    assert ids == idempotent_event_ids("k", "cart-1", 3)
    assert len(set(ids)) == 3
    assert ids[:2] == idempotent_event_ids("k", "cart-1", 2)
    assert set(ids).isdisjoint(idempotent_event_ids("k", "cart-2", 3))
    assert set(ids).isdisjoint(idempotent_event_ids("k2", "cart-1", 3))
    assert all(i.version == 5 for i in ids)


# --- Errors as problems ----------------------------------------------------------------------


def test_a_wrong_expected_version_is_a_409_with_expected_actual_and_etag() -> None:
    problem = problem_for(WrongExpectedVersionError("cart-1", 3, 5))
    assert problem is not None
    assert problem.status == 409
    assert problem.body()["expected"] == 3 and problem.body()["actual"] == 5
    assert problem.body()["stream_id"] == "cart-1"
    assert problem.headers == {"ETag": '"5"'}


def test_a_create_that_finds_a_stream_is_a_409_naming_no_stream() -> None:
    problem = problem_for(WrongExpectedVersionError("cart-1", NO_STREAM, 2))
    assert problem is not None and problem.body()["expected"] == "no stream"
    missing = problem_for(WrongExpectedVersionError("cart-1", 4, None))
    assert missing is not None and missing.headers == {} and missing.body()["actual"] is None


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (TransactionConflictError("serialization failure"), 409),
        (AggregateNotFoundError("Cart", "1"), 404),
        (InvalidArgumentError("bad"), 422),
        (DuplicateEventIdError("cart-1", [uuid.uuid4()]), 422),
        (DatabaseUnavailableError("down"), 503),
    ],
)
def test_errors_map_to_statuses(error: EventStoreError, status: int) -> None:
    problem = problem_for(error)
    assert problem is not None and problem.status == status
    assert problem.body()["status"] == status and problem.body()["detail"] == str(error)


def test_an_unavailable_database_says_when_to_retry() -> None:
    problem = problem_for(DatabaseUnavailableError("down"), retry_after=7)
    assert problem is not None and problem.headers == {"Retry-After": "7"}


@pytest.mark.parametrize("error", [EventStoreError("bug"), ValueError("bug"), KeyError("x")])
def test_other_errors_are_left_to_the_framework(error: Exception) -> None:
    assert problem_for(error) is None


# --- The middleware --------------------------------------------------------------------------


async def call(app: Any, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    await MessageContextMiddleware(app)(scope, receive, send)
    return sent


def recording_app(seen: list[dict[str, Any]]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_metadata())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_the_middleware_puts_the_request_ids_in_the_message_context() -> None:
    seen: list[dict[str, Any]] = []
    sent = await call(
        recording_app(seen),
        [(b"X-Correlation-ID", b"corr-1"), (b"traceparent", TRACEPARENT.encode())],
    )
    assert seen == [{"correlation_id": "corr-1", "traceparent": TRACEPARENT}]
    assert (b"x-correlation-id", b"corr-1") in sent[0]["headers"]
    assert current_metadata().get("correlation_id") is None  # only inside the request


async def test_the_middleware_takes_a_request_id_or_makes_a_correlation_id() -> None:
    seen: list[dict[str, Any]] = []
    await call(recording_app(seen), [(b"x-request-id", b"req-9")])
    sent = await call(recording_app(seen), [(b"x-correlation-id", b"bad\x01id")])
    assert seen[0]["correlation_id"] == "req-9"
    made = seen[1]["correlation_id"]
    assert uuid.UUID(made).version == 7
    assert (b"x-correlation-id", made.encode()) in sent[0]["headers"]


async def test_the_middleware_passes_other_scopes_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        assert current_metadata() == {}

    async def noop(*args: Any) -> Any:
        return {}

    await MessageContextMiddleware(app)({"type": "lifespan"}, noop, noop)
    assert seen == ["lifespan"]


def test_the_wsgi_middleware_puts_the_request_ids_in_the_message_context() -> None:
    seen: list[dict[str, Any]] = []
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        seen.append(current_metadata())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    wrapped = WSGIMessageContextMiddleware(app)
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    body = wrapped(
        {**environ, "HTTP_X_CORRELATION_ID": "w-1", "HTTP_TRACEPARENT": TRACEPARENT},
        start_response,
    )
    assert list(body) == [b"ok"]
    wrapped({**environ, "HTTP_X_CORRELATION_ID": " "}, start_response)
    assert seen[0] == {"correlation_id": "w-1", "traceparent": TRACEPARENT}
    assert ("X-Correlation-ID", "w-1") in started[0][1]
    made = seen[1]["correlation_id"]
    assert uuid.UUID(made).version == 7 and ("X-Correlation-ID", made) in started[1][1]
    assert current_metadata() == {}
