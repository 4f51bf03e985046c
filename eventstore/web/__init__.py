"""HTTP pieces for any web framework: ETags, idempotency keys, errors as responses, context.

Nothing here imports a web framework: `etag` maps stream versions to ``ETag`` /
``If-Match`` values, `idempotency` reads ``Idempotency-Key`` headers, `errors` maps the
store's errors to HTTP statuses and problem documents, and `middleware` puts a request's
correlation id and ``traceparent`` into the message context of any ASGI or WSGI app. The FastAPI
integration, `eventstore.web.fastapi`, needs the ``fastapi`` extra.
"""

from eventstore.web.errors import HttpProblem, problem_for
from eventstore.web.etag import etag_for, version_from_if_match
from eventstore.web.idempotency import IDEMPOTENCY_KEY_HEADER, idempotency_key_from
from eventstore.web.middleware import (
    CORRELATION_ID_HEADER,
    MessageContextMiddleware,
    WSGIMessageContextMiddleware,
)

__all__ = [
    "CORRELATION_ID_HEADER",
    "IDEMPOTENCY_KEY_HEADER",
    "HttpProblem",
    "MessageContextMiddleware",
    "WSGIMessageContextMiddleware",
    "etag_for",
    "idempotency_key_from",
    "problem_for",
    "version_from_if_match",
]
