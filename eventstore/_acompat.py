"""Pairs each asyncio primitive that async sources need with a thread-based sync twin.

`tools/async_to_sync.py` generates the sync modules from the async ones by renaming: its
table maps `asleep` to `sleep`, `AEvent` to `Event`, `ALock` to `Lock`, `aspawn` to `spawn`,
`agather` to `gather` and `atimeout` to `timeout`, and its generic rule maps `AsyncHandle` to
`Handle`. So an async source uses these names, never `asyncio` itself, and the generated
module ends up using the twins with the same signatures.

`Event` would clash with `eventstore.events.Event` in a module that imports both: such a
module imports this one (`from eventstore import _acompat`) and writes `_acompat.AEvent`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Generic, ParamSpec, TypeVar

__all__ = [
    "AEvent",
    "ALock",
    "AsyncHandle",
    "Event",
    "Handle",
    "Lock",
    "agather",
    "asleep",
    "aspawn",
    "atimeout",
    "gather",
    "sleep",
    "spawn",
    "timeout",
]

T = TypeVar("T")
P = ParamSpec("P")

# The primitives whose async and sync classes already share their method names: `wait`,
# `set`, `clear` and `is_set` for the events; `async with` / `with` for the locks.
AEvent = asyncio.Event
Event = threading.Event
ALock = asyncio.Lock
Lock = threading.Lock

# The event loop keeps only weak references to tasks: these keep running ones alive even when
# the caller drops its handle.
_running: set[asyncio.Task[Any]] = set()


async def asleep(seconds: float) -> None:
    """Suspends the current task for `seconds`, letting other tasks run."""
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    """Blocks the current thread for `seconds`."""
    time.sleep(seconds)


class AsyncHandle(Generic[T]):
    """Follows a function running as an asyncio task, started by `aspawn`."""

    def __init__(self, task: asyncio.Task[T]) -> None:
        self._task = task

    def done(self) -> bool:
        """Tells whether the function has returned or raised."""
        return self._task.done()

    async def join(self) -> T:
        """Waits for the function to finish; returns its result or raises its error."""
        return await self._task


class Handle(Generic[T]):
    """Follows a function running in a daemon thread, started by `spawn`."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._result: list[T] = []  # a list, since None may be a result too
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._result.append(self._fn())
        except BaseException as error:  # kept for `join`, which runs in the caller's thread
            self._error = error

    def done(self) -> bool:
        """Tells whether the function has returned or raised."""
        return not self._thread.is_alive()

    def join(self) -> T:
        """Waits for the function to finish; returns its result or raises its error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result[0]


def aspawn(
    fn: Callable[P, Coroutine[Any, Any, T]], /, *args: P.args, **kwargs: P.kwargs
) -> AsyncHandle[T]:
    """Starts `fn(*args, **kwargs)` as a task of the running loop and returns its handle."""
    task = asyncio.create_task(fn(*args, **kwargs))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return AsyncHandle(task)


def spawn(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Handle[T]:
    """Starts `fn(*args, **kwargs)` in a daemon thread and returns its handle."""
    return Handle(lambda: fn(*args, **kwargs))


async def agather(*handles: AsyncHandle[T]) -> list[T]:
    """Waits for every handle, then returns their results or raises the first one's error.

    "First" follows the order of `handles`, as in `gather`, so both twins raise the same error;
    unlike `asyncio.gather`, no function is still running when the error arrives.
    """
    outcomes = await asyncio.gather(*(h.join() for h in handles), return_exceptions=True)
    return _results(outcomes)


def gather(*handles: Handle[T]) -> list[T]:
    """Waits for every handle, then returns their results or raises the first one's error."""
    outcomes: list[T | BaseException] = []
    for handle in handles:
        try:
            outcomes.append(handle.join())
        except BaseException as error:  # raised below, once every thread has finished
            outcomes.append(error)
    return _results(outcomes)


def _results(outcomes: list[T | BaseException]) -> list[T]:
    """Raises the first error among `outcomes`, or returns them all as results."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]


def atimeout(seconds: float | None) -> asyncio.Timeout:
    """Returns `asyncio.timeout(seconds)`: the block is cancelled, then raises TimeoutError.

    None means no deadline.
    """
    return asyncio.timeout(seconds)


@contextmanager
def timeout(seconds: float | None) -> Iterator[None]:
    """Raises TimeoutError when the block ends after `seconds` have passed.

    A thread cannot be interrupted safely, so unlike `atimeout` this does not cut the block
    short: a blocking call inside it runs to its end, and the overrun is reported after the
    fact. Bound each blocking call with its own timeout (a connect or statement timeout) to
    get the same behaviour as the async twin. An error raised by the block wins over the
    timeout. None means no deadline.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    yield
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"the block took longer than {seconds} s")
