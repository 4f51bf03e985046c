"""The store's errors as HTTP responses: a status, headers and a problem document.

`problem_for` maps an error to an `HttpProblem` (RFC 9457 problem details), or None for
errors that are bugs or misconfiguration (let the framework answer 500):

==============================  ======  ===================================================
error                           status  notes
==============================  ======  ===================================================
WrongExpectedVersionError       409     ``expected`` and ``actual`` in the body; the
                                        current version's ``ETag`` when the stream exists
TransactionConflictError        409     the whole request may be retried
AggregateNotFoundError          404
InvalidArgumentError            422     bad ``If-Match``, ``Idempotency-Key``, version...
DuplicateEventIdError           422     an idempotency key reused for other content
DatabaseUnavailableError        503     ``Retry-After`` (seconds)
==============================  ======  ===================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from eventstore.errors import (
    AggregateNotFoundError,
    ConcurrencyError,
    DatabaseUnavailableError,
    DuplicateEventIdError,
    InvalidArgumentError,
    WrongExpectedVersionError,
)
from eventstore.web.etag import etag_for

__all__ = ["PROBLEM_CONTENT_TYPE", "HttpProblem", "problem_for"]

PROBLEM_CONTENT_TYPE = "application/problem+json"


@dataclasses.dataclass(frozen=True, slots=True)
class HttpProblem:
    """Holds an HTTP error response: status, title, detail, extra fields and headers."""

    status: int
    title: str
    detail: str
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """Returns the problem document (``application/problem+json``)."""
        return {"title": self.title, "status": self.status, "detail": self.detail, **self.extra}


def problem_for(exc: BaseException, *, retry_after: int = 1) -> HttpProblem | None:
    """Returns the HTTP answer to an error of the store, or None for any other error."""
    detail = str(exc)
    if isinstance(exc, WrongExpectedVersionError):
        headers = {} if exc.actual is None else {"ETag": etag_for(exc.actual)}
        expected = exc.expected if isinstance(exc.expected, int) else str(exc.expected)
        extra = {"stream_id": exc.stream_id, "expected": expected, "actual": exc.actual}
        return HttpProblem(409, "Conflict", detail, extra, headers)
    if isinstance(exc, ConcurrencyError):
        return HttpProblem(409, "Conflict", detail)
    if isinstance(exc, AggregateNotFoundError):
        extra = {"aggregate": exc.aggregate, "aggregate_id": exc.aggregate_id}
        return HttpProblem(404, "Not Found", detail, extra)
    if isinstance(exc, InvalidArgumentError | DuplicateEventIdError):
        return HttpProblem(422, "Unprocessable Content", detail)
    if isinstance(exc, DatabaseUnavailableError):
        headers = {"Retry-After": str(retry_after)}
        return HttpProblem(503, "Service Unavailable", detail, {}, headers)
    return None
