"""Stable event ids from an idempotency key: a retried command appends nothing twice.

The ids of a command's events are ``uuid5`` over the key, the stream id and the event's
index in the command, so a retry with the same key carries the same ids. The store keeps
event ids unique, so a repeat can never append twice; the repositories also recognise it
while loading and return the original result instead of running the command again.
"""

from __future__ import annotations

import uuid
from typing import Final

__all__ = ["IDEMPOTENCY_NAMESPACE", "idempotent_event_id", "idempotent_event_ids"]

# A fixed namespace (uuid5 of the package's name in the URL namespace), never to change:
# ids derived today must be derived identically by every later release.
IDEMPOTENCY_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "urn:eventkeeper:idempotency")


def idempotent_event_id(key: str, stream_id: str, index: int) -> uuid.UUID:
    """Returns the id of the ``index``-th event (from 0) a keyed command appends to a stream."""
    if not key:
        raise ValueError("an idempotency key must not be empty")
    if index < 0:
        raise ValueError("index must be >= 0")
    return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{len(key)}:{key}\x00{stream_id}\x00{index}")


def idempotent_event_ids(key: str, stream_id: str, count: int) -> tuple[uuid.UUID, ...]:
    """Returns the ids of the ``count`` events a keyed command appends to a stream."""
    return tuple(idempotent_event_id(key, stream_id, i) for i in range(count))
