"""The window state machine: snapshots, visibility, capping, draining and tokens (pure)."""

from __future__ import annotations

import random

import pytest

from eventstore import InvalidArgumentError
from eventstore.subscriptions.window import NOTHING_SEEN, PgSnapshot, Window, covers


def test_a_snapshot_parses_and_prints_postgres_text_form() -> None:
    snapshot = PgSnapshot.parse("10:20:12,15")
    assert snapshot == PgSnapshot(10, 20, (12, 15))
    assert str(snapshot) == "10:20:12,15"
    assert PgSnapshot.parse("7:7:") == PgSnapshot(7, 7)


@pytest.mark.parametrize("text", ["", "1:2", "a:b:c", "5:3:", "1:9:12"])
def test_malformed_snapshots_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        PgSnapshot.parse(text)


def test_visibility_follows_xmin_xmax_and_the_in_progress_list() -> None:
    snapshot = PgSnapshot(10, 20, (12, 15))
    assert [x for x in range(5, 25) if snapshot.visible(x)] == [
        5, 6, 7, 8, 9, 10, 11, 13, 14, 16, 17, 18, 19,
    ]  # fmt: skip


def test_nothing_is_visible_to_a_reader_that_has_seen_nothing() -> None:
    assert not any(NOTHING_SEEN.visible(x) for x in range(3, 1000))


def test_a_window_holds_what_high_sees_and_low_does_not() -> None:
    low = PgSnapshot(10, 20, (12,))
    high = PgSnapshot(15, 30, (15, 22))
    window = Window(low).open(high)
    inside = [x for x in range(5, 35) if window.contains(x)]
    assert inside == [12, 20, 21, 23, 24, 25, 26, 27, 28, 29]
    from_xid, to_xid, extra = window.candidate_ranges()
    assert (from_xid, to_xid, extra) == (20, 30, (12,))


def test_draining_moves_low_to_high_and_closes_the_window() -> None:
    window = Window(PgSnapshot(10, 20)).open(PgSnapshot(20, 30)).advanced(99)
    assert window.position == 99
    drained = window.drained()
    assert drained == Window(PgSnapshot(20, 30), None, 0)
    assert not drained.is_open


def test_a_snapshot_older_than_the_checkpoint_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="older"):
        Window(PgSnapshot(50, 60)).open(PgSnapshot(10, 20))


def test_a_window_starts_at_the_position_given() -> None:
    window = Window(PgSnapshot(10, 20)).open(PgSnapshot(20, 30), start=41)
    assert window.position == 41
    assert Window(PgSnapshot(10, 20)).open(PgSnapshot(20, 30), start=-1).position == 0


def test_tokens_round_trip_and_reject_garbage() -> None:
    window = Window(PgSnapshot(10, 20, (12,)), PgSnapshot(15, 30, (22,)), 1234)
    assert Window.from_token(window.to_token()) == window
    assert Window.from_token(Window().to_token()) == Window()
    for garbage in ["", "abc", "e30", Window().to_token()[:-3]]:
        with pytest.raises(InvalidArgumentError):
            Window.from_token(garbage)


def test_covers_tells_when_a_reader_has_seen_everything_finished_at_a_snapshot() -> None:
    target = PgSnapshot(10, 20, (12, 15))
    assert covers(PgSnapshot(10, 20, (12, 15)), target)
    assert covers(PgSnapshot(21, 25, (21,)), target)
    assert not covers(PgSnapshot(10, 19, (12, 15)), target)  # 19 finished, unseen
    assert not covers(PgSnapshot(10, 20, (11, 12, 15)), target)  # 11 finished, unseen
    assert covers(PgSnapshot(10, 18, (12, 15)), PgSnapshot(10, 20, (12, 15, 18, 19)))


def _simulate(seed: int) -> None:
    """Transactions start and finish at random; windows read them.

    Each finished transaction is seen exactly once, and in commit order window by window:
    one that committed before another is never seen in a later window (that is what keeps
    a stream's events in order, since a stream's next writer waits for the previous one).
    """
    rng = random.Random(seed)
    next_xid, running, finished = 3, set[int](), list[int]()
    window, seen = Window(), dict[int, int]()  # xid -> window number

    def snapshot() -> PgSnapshot:
        xip = tuple(sorted(running))
        return PgSnapshot(min(running, default=next_xid), next_xid, xip)

    def read(number: int) -> None:
        nonlocal window
        window = window.open(snapshot())
        for xid in range(3, next_xid):
            if window.contains(xid):
                assert xid not in seen, f"{xid} seen twice"
                seen[xid] = number
        window = window.drained()

    for step in range(400):
        action = rng.random()
        if action < 0.4:
            running.add(next_xid)
            next_xid += 1
        elif action < 0.8 and running:
            xid = rng.choice(sorted(running))
            running.discard(xid)
            finished.append(xid)
        else:
            read(step)
    for xid in sorted(running, key=lambda _: rng.random()):
        running.discard(xid)
        finished.append(xid)
    read(10_000)
    assert sorted(seen) == sorted(finished)
    windows = [seen[xid] for xid in finished]  # in commit order
    assert windows == sorted(windows)


@pytest.mark.parametrize("seed", range(30))
def test_every_finished_transaction_lands_in_exactly_one_window_in_commit_order(
    seed: int,
) -> None:
    _simulate(seed)


def test_a_live_page_spans_twice_the_last_window_within_its_bounds() -> None:
    """A live worker's next page covers twice the transaction ids of the window it just
    drained, never fewer than the small-window range nor more than the cap."""
    from eventstore.postgres.subscriptions import (
        LIVE_WINDOW_XIDS_MAX,
        SMALL_WINDOW_XIDS,
        live_xids,
    )

    assert live_xids(0) == SMALL_WINDOW_XIDS
    assert live_xids(SMALL_WINDOW_XIDS // 2) == SMALL_WINDOW_XIDS
    assert live_xids(340) == 680
    assert live_xids(LIVE_WINDOW_XIDS_MAX) == LIVE_WINDOW_XIDS_MAX
    assert SMALL_WINDOW_XIDS < LIVE_WINDOW_XIDS_MAX
