"""Entering a driver's context manager with its errors translated, but not the caller's.

`scope_async.py` is the source and `scope.py` its generated sync twin (see
`tools/async_to_sync.py`).

``with translated_errors(): async with pool.connection() as conn: yield conn`` would also
translate whatever the caller's block raises: an application's own typo'd table would come
out as "event store tables not found, run eventstore migrate". `entered` translates only
what entering and leaving the context manager raise (taking a connection, BEGIN, COMMIT,
ROLLBACK); the block's own exceptions pass through untouched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

from eventstore.postgres.errors import translated_errors

__all__ = ["entered"]

T = TypeVar("T")


@asynccontextmanager
async def entered(manager: AbstractAsyncContextManager[T]) -> AsyncIterator[T]:
    """Enters ``manager``; its own errors are translated, the block's are not."""
    with translated_errors():
        value = await manager.__aenter__()
    try:
        yield value
    except BaseException as exc:
        with translated_errors():  # a failing ROLLBACK is the driver's error, not the block's
            suppressed = await manager.__aexit__(type(exc), exc, exc.__traceback__)
        if not suppressed:
            raise
    else:
        with translated_errors():
            await manager.__aexit__(None, None, None)
