"""HTTP webhooks through httpx, signed the Standard Webhooks way.

Each message is a ``POST`` whose body is the message in the CloudEvents JSON format
(``application/cloudevents+json``: attributes and data in one document), so that the
signature covers the attributes too: headers are not signed. The Standard Webhooks
headers are ``webhook-id`` (the event id: the receiver's key to drop duplicates by),
``webhook-timestamp`` (when this attempt was sent) and ``webhook-signature``
(``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body`` with the shared secret), as the
``standardwebhooks`` package computes and verifies them.

A 2xx answer confirms the message. A 4xx is a permanent refusal of that message (the
receiver will not take it as it is), except 408, 425 and 429, which ask to come back
later; a 5xx, a 3xx (redirects are not followed), a timeout and a connection error are
transient.

`process_webhook` is the receiver's side: it verifies the signature, and the message's
effects and its inbox row commit in one transaction before the receiver answers 2xx.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import httpx
import psycopg
import standardwebhooks

from eventstore.errors import InvalidArgumentError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from outbox.consumer import Handle, apply_once, require_idle
from outbox.errors import PermanentPublishError, PublishError, TransientPublishError
from outbox.message import Message

__all__ = ["CONTENT_TYPE", "WebhookPublisher", "process_webhook"]

CONTENT_TYPE: Final = "application/cloudevents+json; charset=utf-8"
# Client errors that mean "not now" rather than "never".
_RETRY_LATER: Final = frozenset({408, 425, 429})
Url = str | Callable[[Message], str]


class WebhookPublisher:
    """POSTs each message to a URL, signed with the Standard Webhooks scheme.

    - ``url``: the endpoint, or a function of the message.
    - ``secret``: the shared signing secret (``whsec_<base64>``, as Standard Webhooks
      issues them, or raw bytes).
    - ``timeout``: seconds for the whole request; ``headers``: extra headers to send.
    - ``transport``: an httpx transport (``httpx.MockTransport`` in tests), if not the
      network's.
    """

    system: ClassVar[str] = "webhook"

    def __init__(
        self,
        url: Url,
        *,
        secret: str | bytes,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.transport = transport
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._signer = standardwebhooks.Webhook(secret)
        self._client: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"WebhookPublisher({self.url!r})"

    async def publish(self, messages: Sequence[Message]) -> None:
        """POSTs the messages concurrently; each is confirmed by a 2xx answer."""
        if not messages:
            return
        async with self._lock:
            if self._client is None:
                self._client = httpx.AsyncClient(
                    timeout=self.timeout, follow_redirects=False, transport=self.transport
                )
            client = self._client
        outcomes = await asyncio.gather(
            *(self._post(client, m) for m in messages), return_exceptions=True
        )
        failures = []
        for outcome in outcomes:
            if isinstance(outcome, PublishError):
                failures.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        for failure in failures:
            if isinstance(failure, PermanentPublishError):
                raise failure
        for failure in failures:
            raise failure

    async def _post(self, client: httpx.AsyncClient, message: Message) -> None:
        url = self.url if isinstance(self.url, str) else self.url(message)
        body = message.structured()
        try:
            response = await client.post(url, content=body, headers=self._headers(message, body))
        except httpx.TimeoutException as exc:
            raise TransientPublishError(f"webhook {url} timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise TransientPublishError(f"webhook {url} unreachable: {exc!r}") from exc
        _check(message, url, response)

    def _headers(self, message: Message, body: bytes) -> dict[str, str]:
        # The signature's timestamp is this attempt's (receivers refuse old ones).
        now = int(time.time())
        signature = self._signer.sign(
            message.id, dt.datetime.fromtimestamp(now, dt.UTC), body.decode()
        )
        return {
            **self.headers,
            "content-type": CONTENT_TYPE,
            "webhook-id": message.id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        }

    async def close(self) -> None:
        """Closes the HTTP client (the next publish opens a new one)."""
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _check(message: Message, url: str, response: httpx.Response) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    answer = f"HTTP {status} {response.reason_phrase} from {url}: {response.text[:200]!r}"
    if 400 <= status < 500 and status not in _RETRY_LATER:
        raise PermanentPublishError(message, answer)
    raise TransientPublishError(answer)


async def process_webhook(
    body: bytes,
    headers: Mapping[str, str],
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    handle: Handle,
    *,
    secret: str | bytes,
    schema: str = DEFAULT_SCHEMA,
) -> bool:
    """Verifies and applies a received webhook at most once; returns whether it was new.

    ``body`` and ``headers`` are the request's (as your web framework gives them);
    ``secret`` is the one the publisher signs with. A request whose Standard Webhooks
    signature does not verify (or is too old), or whose body is not a message in this
    toolkit's envelope, raises `InvalidArgumentError`: answer 4xx, the sender will not
    retry it. Otherwise, in one transaction on ``conn`` (which must have none open), the
    message id is recorded in the inbox for ``consumer`` and, if it was not there,
    ``handle(message, conn)`` applies the effects (`outbox.consumer.apply_once`). Answer
    2xx once this returns (after the commit; a redelivery returns False, answer 2xx too),
    5xx if it raised anything else: the sender retries.
    """
    require_idle(conn)
    try:
        standardwebhooks.Webhook(secret).verify(body, dict(headers), json_parse=False)
    except standardwebhooks.WebhookVerificationError as exc:
        raise InvalidArgumentError(f"webhook signature: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"webhook body is not UTF-8: {exc}") from exc
    message = Message.from_structured(body)
    return await apply_once(
        message, conn, consumer, handle, system=WebhookPublisher.system, schema=schema
    )
