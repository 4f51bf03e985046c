"""Shard keys: a stable hash of a stream id, stored with each event (pure)."""

from __future__ import annotations

import zlib

__all__ = ["shard_key"]


def shard_key(stream_id: str) -> int:
    """Returns a stable, non-negative 31-bit hash of a stream id (same in every process)."""
    return zlib.crc32(stream_id.encode("utf-8")) & 0x7FFF_FFFF
