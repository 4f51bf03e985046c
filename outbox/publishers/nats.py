"""NATS JetStream through nats-py: publish with acks, the event id as ``Nats-Msg-Id``.

Every message is a JetStream publish that waits for the stream's ack. ``Nats-Msg-Id`` is
the event id, so the stream's duplicate window (``duplicate_window``, 2 minutes by
default) drops the relay's own re-publications: a batch published again after a crash or
a retry is stored once. The CloudEvents attributes travel as ``ce-*`` headers, the
content type as ``Content-Type``, the body is the event's JSON.

A message larger than the server's ``max_payload``, or than the stream's
``max_msg_size``, is a `PermanentPublishError` ("too large"); a missing stream, a
timeout and a lost connection are transient. The connection does not reconnect by
itself: after a failure the next call connects anew, so the relay's backoff paces the
attempts and the shard's status shows the outage.

`process_nats_message` is the consumer side, for a JetStream consumer: the message's
effects and its inbox row commit in one transaction, and the message is acked only after
that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

import nats
import nats.errors
import nats.js.errors
import psycopg
from nats.aio.client import Client
from nats.aio.msg import Msg

from eventstore.errors import InvalidArgumentError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from outbox.consumer import Handle, apply_once, require_idle
from outbox.errors import PermanentPublishError, PublishError, TransientPublishError
from outbox.message import Message, binary_headers, message_from_headers

__all__ = ["HEADER_PREFIX", "NatsPublisher", "message_from_nats", "process_nats_message"]

logger = logging.getLogger("outbox.publishers.nats")

HEADER_PREFIX: Final = "ce-"
MSG_ID: Final = "Nats-Msg-Id"
# JetStream's error code for "message size exceeds maximum allowed" (the stream's limit).
_TOO_LARGE: Final = 10054
EXPECTED_STREAM: Final = "Nats-Expected-Stream"
STATUS: Final = "Status"
NO_RESPONDERS: Final = "503"
Subject = str | Callable[[Message], str]


class NatsPublisher:
    """Publishes messages to NATS JetStream, waiting for each message's ack.

    - ``subject``: a string or a function of the message; by default ``events.<type>``.
      A JetStream stream must capture it.
    - ``stream``: the stream the subject must land in (``Nats-Expected-Stream``), if given.
    - ``timeout``: seconds to wait for an ack; ``connect_timeout`` to connect.
    """

    system: ClassVar[str] = "nats"

    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        subject: Subject | None = None,
        stream: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.servers = servers
        self.subject = subject
        self.stream = stream
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client: Client | None = None
        self._acks: _Acks | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"NatsPublisher({self.servers!r})"

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publishes the messages together and waits for JetStream's ack of each.

        The messages go out back to back, each with a reply subject of this publisher's
        own (one subscription for all of them, see `_Acks`), and the call waits for every
        ack with one deadline, ``timeout``: no request and no timer per message.
        """
        if not messages:
            return
        acks = await self._open()
        outcomes: list[asyncio.Future[Any] | BaseException] = []
        for message in messages:
            headers = binary_headers(message, HEADER_PREFIX)
            headers[MSG_ID] = message.id
            headers["Content-Type"] = message.datacontenttype
            if self.stream is not None:
                headers[EXPECTED_STREAM] = self.stream
            try:
                outcomes.append(await acks.publish(self._subject(message), message.data, headers))
            except Exception as exc:  # too large, a lost connection: that message only
                outcomes.append(exc)
        waiting = [o for o in outcomes if isinstance(o, asyncio.Future)]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.timeout)
            for future in late:
                future.cancel()
        failures = [
            _failure(m, r)
            for m, r in zip(messages, map(_outcome, outcomes), strict=True)
            if r is not None
        ]
        if any(isinstance(f, TransientPublishError) for f in failures):
            await self.close()
        for failure in failures:
            if isinstance(failure, PermanentPublishError):
                raise failure
        for failure in failures:
            raise failure

    def _subject(self, message: Message) -> str:
        if self.subject is None:
            return f"events.{message.type}"
        if isinstance(self.subject, str):
            return self.subject
        return self.subject(message)

    async def _open(self) -> _Acks:
        async with self._lock:
            if self._acks is not None and self._client is not None and self._client.is_connected:
                return self._acks
            await self._close()
            try:
                self._client = await nats.connect(
                    self.servers,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    # One attempt per server and no reconnecting in the background:
                    # nats-py retries an initial connect forever otherwise.
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                    error_cb=_log_error,
                )
                self._acks = await _Acks.start(self._client)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                raise TransientPublishError(f"cannot connect to NATS: {_describe(exc)}") from exc
            return self._acks

    async def close(self) -> None:
        """Closes the connection (the next publish opens a new one)."""
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        client, self._client, self._acks = self._client, None, None
        if client is not None and not client.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await client.close()


class _Acks:
    """Publishes to JetStream with a reply subject each, and matches the acks to them.

    One wildcard subscription on a fresh inbox takes every ack; each publish gets a
    future, resolved with the ack's outcome (None, or the error JetStream answered). It
    is what nats-py's ``publish_async`` does, minus a semaphore per message, and with
    JetStream's error replies turned into errors (nats-py 2.x raises those inside its
    reply callback, so their futures never complete).
    """

    def __init__(self, client: Client, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}

    @classmethod
    async def start(cls, client: Client) -> _Acks:
        acks = cls(client, client.new_inbox() + ".")
        await client.subscribe(acks._prefix + "*", cb=acks._reply)
        return acks

    async def publish(
        self, subject: str, data: bytes, headers: dict[str, str]
    ) -> asyncio.Future[None]:
        token = str(next(self._tokens))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda _: self._waiting.pop(token, None))
        self._waiting[token] = future
        try:
            await self._client.publish(subject, data, reply=self._prefix + token, headers=headers)
        except BaseException:
            future.cancel()
            raise
        return future

    async def _reply(self, msg: Msg) -> None:
        future = self._waiting.get(msg.subject[len(self._prefix) :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(STATUS) == NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        if b'"error"' not in msg.data:  # an ack: {"stream":...,"seq":...}, no need to parse
            future.set_result(None)
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            future.set_exception(nats.errors.Error(f"not a JetStream ack: {msg.data[:100]!r}"))
            return
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is None:
            future.set_result(None)
            return
        try:  # nats-py returns the error for some codes and raises it for others
            found: BaseException = nats.js.errors.APIError.from_error(error)
        except nats.js.errors.APIError as raised:
            found = raised
        future.set_exception(found)


def _outcome(outcome: asyncio.Future[Any] | BaseException) -> BaseException | None:
    """Returns what went wrong with one message's publish, or None if JetStream acked it."""
    if isinstance(outcome, BaseException):
        return outcome
    if outcome.cancelled():
        return TimeoutError("no ack from JetStream in time")
    return outcome.exception()


async def _log_error(error: Exception) -> None:
    logger.debug("NATS client error: %s", _describe(error))


def _failure(message: Message, outcome: BaseException | Any) -> PublishError:
    """Returns the publish error a nats-py outcome of one message means."""
    if isinstance(outcome, nats.errors.MaxPayloadError):
        return PermanentPublishError(
            message, f"too large: {len(message.data)} bytes exceed the server's max_payload"
        )
    if isinstance(outcome, nats.js.errors.APIError) and outcome.err_code == _TOO_LARGE:
        return PermanentPublishError(message, f"too large: {outcome.description}")
    if isinstance(outcome, nats.js.errors.NoStreamResponseError):
        return TransientPublishError(
            f"no JetStream stream answered for subject of type {message.type!r}"
        )
    if isinstance(outcome, nats.errors.Error | OSError | TimeoutError):
        return TransientPublishError(f"NATS publish failed: {_describe(outcome)}")
    if isinstance(outcome, BaseException):
        raise outcome
    raise AssertionError(f"unexpected publish outcome {outcome!r}")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".rstrip(": ")


def message_from_nats(msg: Any) -> Message:
    """Returns the message a NATS message carries (published by `NatsPublisher`)."""
    headers = dict(msg.headers or {})
    return message_from_headers(headers, HEADER_PREFIX, msg.data, headers.get("Content-Type"))


async def process_nats_message(
    msg: Any,
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    handle: Handle,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> bool:
    """Applies a JetStream message at most once, then acks it; returns whether it was new.

    ``msg`` is a ``nats.aio.msg.Msg`` of a JetStream consumer (push or pull). In one
    transaction on ``conn`` (which must have none open), the message id is recorded in
    the inbox for ``consumer`` and, if it was not there, ``handle(message, conn)``
    applies the effects (`outbox.consumer.apply_once`); the message is acked only after
    the commit, a redelivered one without applying it again. If ``handle`` raises, the
    transaction rolls back, the message is nak'ed (JetStream redelivers it) and the
    error propagates. A message that is not in this toolkit's envelope is terminated
    (never redelivered) and raises `InvalidArgumentError`.
    """
    require_idle(conn)
    try:
        message = message_from_nats(msg)
    except InvalidArgumentError:
        await msg.term()
        raise
    try:
        fresh = await apply_once(
            message, conn, consumer, handle, system=NatsPublisher.system, schema=schema
        )
    except BaseException:
        with contextlib.suppress(nats.errors.Error, OSError):
            await msg.nak()
        raise
    await msg.ack()
    return fresh
