"""``Idempotency-Key`` headers: a retried request appends nothing twice.

`idempotency_key_from` validates the header; pass the key to a repository's
``idempotency_key=``. The repository derives the events' ids from it (uuid5 over the key,
the stream id and the event's index, `eventstore.aggregates.idempotent_event_ids`), and a
repeat returns the original result, with ``append.repeated`` set, instead of appending.
"""

from __future__ import annotations

from typing import Final

from eventstore.aggregates.idempotency import idempotent_event_id, idempotent_event_ids
from eventstore.errors import InvalidArgumentError

__all__ = [
    "IDEMPOTENCY_KEY_HEADER",
    "MAX_KEY_LENGTH",
    "idempotency_key_from",
    "idempotent_event_id",
    "idempotent_event_ids",
]

IDEMPOTENCY_KEY_HEADER: Final = "Idempotency-Key"
MAX_KEY_LENGTH: Final = 255


def idempotency_key_from(header: str | None) -> str | None:
    """Returns the key of an ``Idempotency-Key`` header, or None when it is absent.

    Raises `InvalidArgumentError` for an empty key, one longer than 255 characters or one
    with characters outside printable ASCII.
    """
    if header is None:
        return None
    key = header.strip()
    if key.startswith('"') and key.endswith('"') and len(key) >= 2:
        key = key[1:-1]  # the IETF draft sends it as a structured-field string
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise InvalidArgumentError(
            f"{IDEMPOTENCY_KEY_HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return key
