"""Tests that the async primitives of eventstore._acompat and their sync twins agree."""

from __future__ import annotations

import time

import pytest

from eventstore import _acompat


def _fail(message: str) -> int:
    raise ValueError(message)


async def _afail(message: str) -> int:
    raise ValueError(message)


async def _atwice(x: int) -> int:
    await _acompat.asleep(0)
    return 2 * x


def test_spawned_threads_are_gathered_in_order() -> None:
    handles = [_acompat.spawn(lambda x: 2 * x, x) for x in range(3)]
    assert _acompat.gather(*handles) == [0, 2, 4]
    assert all(h.done() for h in handles)


def test_gather_waits_for_all_then_raises_the_first_error() -> None:
    slow = _acompat.spawn(_acompat.sleep, 0.05)
    with pytest.raises(ValueError, match="first"):
        _acompat.gather(_acompat.spawn(_fail, "first"), _acompat.spawn(_fail, "second"), slow)
    assert slow.done()


async def test_spawned_tasks_are_gathered_in_order() -> None:
    handles = [_acompat.aspawn(_atwice, x) for x in range(3)]
    assert await _acompat.agather(*handles) == [0, 2, 4]


async def test_agather_waits_for_all_then_raises_the_first_error() -> None:
    slow = _acompat.aspawn(_acompat.asleep, 0.05)
    with pytest.raises(ValueError, match="first"):
        await _acompat.agather(
            _acompat.aspawn(_afail, "first"), _acompat.aspawn(_afail, "second"), slow
        )
    assert slow.done()


def test_the_sync_timeout_reports_an_overrun_when_the_block_ends() -> None:
    with _acompat.timeout(None):
        pass
    with pytest.raises(TimeoutError), _acompat.timeout(0.01):
        time.sleep(0.02)


async def test_the_async_timeout_cuts_the_block_short() -> None:
    with pytest.raises(TimeoutError):
        async with _acompat.atimeout(0.01):
            await _acompat.asleep(10)


async def test_the_async_lock_and_event_are_the_asyncio_ones() -> None:
    event, lock = _acompat.AEvent(), _acompat.ALock()
    async with lock:
        event.set()
    assert await event.wait()
    with _acompat.Lock():
        assert _acompat.Event().wait(0) is False
