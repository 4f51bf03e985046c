"""ETags for aggregates: a stream version as an entity tag, and back from ``If-Match``.

An aggregate's ETag is its stream version, quoted: ``"7"``. A client sends it back as
``If-Match: "7"``, which `version_from_if_match` turns into the ``expected_version`` of a
repository's `update` or `save`: a write based on a stale read then fails with
`WrongExpectedVersionError` (a 409) instead of overwriting what the client never saw.
"""

from __future__ import annotations

import re
from typing import Final

from eventstore.errors import InvalidArgumentError

__all__ = ["etag_for", "version_from_if_match"]

_TAG: Final = re.compile(r'^(?:W/)?"(\d{1,18})"$')


def etag_for(version: int) -> str:
    """Returns the strong ETag of a stream version (``"0"`` for an aggregate not yet saved)."""
    if isinstance(version, bool) or version < 0:
        raise InvalidArgumentError("a stream version is >= 0")
    return f'"{version}"'


def version_from_if_match(header: str | None) -> int | None:
    """Returns the version an ``If-Match`` header names; None when absent or ``*``.

    A weak tag (``W/"7"``) names the same version. A list of tags, or a tag that is not a
    version, raises `InvalidArgumentError` (a 422 through `eventstore.web.errors`).
    """
    if header is None:
        return None
    value = header.strip()
    if value in ("", "*"):
        return None
    match = _TAG.match(value)
    if match is None:
        raise InvalidArgumentError(f"If-Match must be one ETag such as '\"7\"', not {header!r}")
    return int(match.group(1))
