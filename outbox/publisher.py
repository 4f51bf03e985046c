"""What a relay publishes through: the `Publisher` protocol, and a recording test double.

A publisher is one class with two coroutines. ``publish(messages)`` sends every message
and returns once the broker has confirmed every one (persisted, routed, answered 2xx);
it may send them concurrently: the relay never passes two messages of one stream in one
call, so order within a stream is the relay's business, not the publisher's. It raises

- `PermanentPublishError(message, reason)` when the broker refused a message for good
  (too large, unroutable, a 4xx): the relay parks that event as a dead letter and holds
  its stream;
- `TransientPublishError` when the broker cannot take messages now (unreachable, a
  timeout, a 5xx): the batch rolls back and is retried with backoff.

When a call raises, the relay counts none of its messages as confirmed (some may have
been, and will be sent again: delivery is at least once). A publisher connects lazily, on
its first ``publish``, and reconnects after a failure; ``close()`` lets go of the
connection and may be followed by more publishing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from outbox.errors import PermanentPublishError, TransientPublishError
from outbox.message import Message

__all__ = ["Publisher", "RecordingPublisher"]


@runtime_checkable
class Publisher(Protocol):
    """Publishes messages to a broker and waits for its confirmation of each."""

    async def publish(self, messages: Sequence[Message]) -> None:
        """Publishes ``messages`` (of distinct streams) and returns once all are confirmed."""
        ...

    async def close(self) -> None:
        """Closes the connection to the broker, if any."""
        ...


class RecordingPublisher:
    """Keeps what it "publishes" in ``published``: the publisher for tests and examples.

    ``refuse(message)`` returns a reason to refuse a message for good (None to take it);
    setting ``unavailable`` to a reason makes every call fail as a transient outage.
    """

    def __init__(self, refuse: Callable[[Message], str | None] | None = None) -> None:
        self.published: list[Message] = []
        self.refuse = refuse
        self.unavailable: str | None = None
        self.calls = 0
        self.closed = False

    async def publish(self, messages: Sequence[Message]) -> None:
        """Records the messages, refusing or failing as configured."""
        self.calls += 1
        if self.unavailable is not None:
            raise TransientPublishError(self.unavailable)
        refused: list[tuple[Message, str]] = []
        for message in messages:
            reason = None if self.refuse is None else self.refuse(message)
            if reason is None:
                self.published.append(message)
            else:
                refused.append((message, reason))
        if refused:
            raise PermanentPublishError(*refused[0])

    async def close(self) -> None:
        """Marks the publisher closed (it still records if used again)."""
        self.closed = True

    def stream(self, stream_id: str) -> list[int]:
        """Returns the versions published for one stream, in publishing order."""
        return [m.stream_version for m in self.published if m.stream_id == stream_id]
