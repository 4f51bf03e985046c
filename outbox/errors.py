"""Errors of the outbox, under the toolkit's one root.

::

    EventStoreError                       (eventstore.errors)
    └── PublishError                      a publisher could not publish a message
        ├── PermanentPublishError         the broker refused this message for good (too
        │                                 large, unroutable, a webhook's 4xx): the relay's
        │                                 engine parks it as a dead letter and holds its
        │                                 stream; carries ``message`` and ``reason``
        └── TransientPublishError         the broker is unreachable, slow or refusing for
                                          now: the batch rolls back and is retried with
                                          backoff, nothing is parked

A publisher raises exactly these two for what the broker said; anything else a relay's
handler raises (a bug in a mapping function) is treated like a permanent refusal of the
event it was raised for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventstore.errors import EventStoreError

if TYPE_CHECKING:
    from outbox.message import Message

__all__ = ["PermanentPublishError", "PublishError", "TransientPublishError"]


class PublishError(EventStoreError):
    """Roots the errors of publishing a message to a broker."""


class PermanentPublishError(PublishError):
    """Reports that the broker refused a message for good; retrying it would not help.

    ``reason`` says why in the broker's words (``unroutable: 312 NO_ROUTE ...``,
    ``too large: ...``, ``HTTP 400 ...``); it is what the dead letter shows.
    """

    def __init__(self, message: Message, reason: str) -> None:
        self.message = message
        self.reason = reason
        super().__init__(
            f"{reason} (message {message.id}, {message.stream_id}@{message.stream_version})"
        )


class TransientPublishError(PublishError):
    """Reports that the broker cannot take messages now (down, slow, full): try later."""
