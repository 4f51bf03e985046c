"""Redis Streams through redis-py: ``XADD`` with the event id and the envelope in the entry.

Each message becomes one stream entry whose fields are the CloudEvents attributes (``id``
is the event id, ``type``, ``subject``, ``time``, ...) and ``data``, the event's JSON. A
call's messages go in one pipeline (one round trip); Redis's reply to each ``XADD`` is the
confirmation. How durable a confirmed entry is depends on the server's persistence
(``appendonly yes`` with ``appendfsync always`` to survive a crash of Redis itself).

``maxlen`` trims each stream to about that many entries (``MAXLEN ~``). A connection error
or a timeout is transient, and so are the replies of a server that cannot write now
(``OOM``, ``LOADING``, ``READONLY``, ...); any other error reply (``WRONGTYPE``: the key is
not a stream) is a permanent refusal of that message.

`process_entry` is the consumer side, for a consumer group (``XREADGROUP``): the entry's
effects and its inbox row commit in one transaction, and the entry is acknowledged
(``XACK``) only after that commit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final

import psycopg
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from eventstore.errors import InvalidArgumentError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from outbox.consumer import Handle, apply_once, require_idle
from outbox.errors import PermanentPublishError, PublishError, TransientPublishError
from outbox.message import Message, message_from_headers

__all__ = ["RedisPublisher", "message_from_entry", "process_entry"]

Key = str | Callable[[Message], str]
# Error replies of a server that cannot take writes now, by their first word.
_TRANSIENT_REPLIES: Final = frozenset(
    {"OOM", "LOADING", "READONLY", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS"}
)


class RedisPublisher:
    """Appends messages to Redis streams with ``XADD``.

    - ``stream``: the stream key, or a function of the message; ``"events"`` by default.
    - ``maxlen``: trim each stream to about this many entries (None: never trim).
    - ``timeout``: seconds to wait for Redis's reply; ``connect_timeout`` to connect.
    """

    system: ClassVar[str] = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        stream: Key = "events",
        maxlen: int | None = None,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._client: redis.asyncio.Redis | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RedisPublisher(stream={self.stream!r})"

    def _redis(self) -> redis.asyncio.Redis:
        if self._client is None:
            # No retries of its own: the relay's backoff paces them, and status shows them.
            self._client = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.connect_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    async def publish(self, messages: Sequence[Message]) -> None:
        """Appends the messages in one pipeline; Redis's reply to each confirms it."""
        if not messages:
            return
        async with self._lock:
            client = self._redis()
        pipeline = client.pipeline(transaction=False)
        for message in messages:
            pipeline.xadd(self._key(message), _fields(message), maxlen=self.maxlen)
        try:
            replies = await pipeline.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            await self.close()
            raise TransientPublishError(f"Redis unavailable: {_describe(exc)}") from exc
        failures = [
            _failure(m, r)
            for m, r in zip(messages, replies, strict=True)
            if isinstance(r, BaseException)
        ]
        for failure in failures:
            if isinstance(failure, PermanentPublishError):
                raise failure
        for failure in failures:
            raise failure

    def _key(self, message: Message) -> str:
        return self.stream if isinstance(self.stream, str) else self.stream(message)

    async def close(self) -> None:
        """Closes the connections (the next publish opens new ones)."""
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await client.aclose()


def _fields(message: Message) -> dict[Any, Any]:
    return {**message.attributes(), "data": message.data}


def _failure(message: Message, error: BaseException) -> PublishError:
    if isinstance(error, redis.exceptions.ResponseError):
        word = str(error).split(" ", 1)[0]
        if word in _TRANSIENT_REPLIES:
            return TransientPublishError(f"Redis cannot write now: {error}")
        return PermanentPublishError(message, f"refused by Redis: {error}")
    return TransientPublishError(f"Redis publish failed: {_describe(error)}")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".rstrip(": ")


def message_from_entry(fields: Mapping[Any, Any]) -> Message:
    """Returns the message a stream entry holds (written by `RedisPublisher`)."""
    text = {_text(k): v for k, v in fields.items()}
    if "data" not in text:
        raise InvalidArgumentError("not a message in this toolkit's envelope: no data field")
    data = text.pop("data")
    content_type = text.pop("datacontenttype", None)
    body = data if isinstance(data, bytes) else _text(data).encode()
    return message_from_headers(
        text, "", body, None if content_type is None else _text(content_type)
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def process_entry(
    client: redis.asyncio.Redis,
    stream: str,
    group: str,
    entry: tuple[Any, Mapping[Any, Any]],
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    handle: Handle,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> bool:
    """Applies a stream entry at most once, then ``XACK`` s it; returns whether it was new.

    ``entry`` is an ``(entry id, fields)`` pair as ``XREADGROUP`` (or ``XAUTOCLAIM``)
    returns it for consumer group ``group`` of ``stream``. In one transaction on
    ``conn`` (which must have none open), the message id is recorded in the inbox for
    ``consumer`` and, if it was not there, ``handle(message, conn)`` applies the effects
    (`outbox.consumer.apply_once`); the entry is acknowledged only after the commit, a
    redelivered one without applying it again. If ``handle`` raises, the transaction
    rolls back, the entry stays pending (``XAUTOCLAIM`` or a read of the pending list
    gets it again) and the error propagates. An entry that is not in this toolkit's
    envelope is acknowledged (it stays in the stream, ``XRANGE`` shows it) and raises
    `InvalidArgumentError`.
    """
    require_idle(conn)
    entry_id, fields = entry
    try:
        message = message_from_entry(fields)
    except InvalidArgumentError:
        await client.xack(stream, group, entry_id)
        raise
    fresh = await apply_once(
        message, conn, consumer, handle, system=RedisPublisher.system, schema=schema
    )
    await client.xack(stream, group, entry_id)
    return fresh
