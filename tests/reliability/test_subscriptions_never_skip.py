"""A subscription never skips an event, whatever order transactions commit in.

Positions are drawn at insert and become visible at commit, so under concurrent writers a
reader that polls "position > checkpoint" skips events. Here 16 writer processes commit
out of order on purpose (random delays inside their transactions, rollbacks, transactions
spanning streams shared between writers) while one transaction stays open for the whole
run, and a 4-shard subscription runs on two runner processes.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from eventstore import PostgresEventStore
from tests.reliability.harness import (
    Outcomes,
    Process,
    assert_handled_exactly_once,
    assert_handled_in_stream_order,
    create_handled_table,
    describe,
    finish,
    handled_count,
    owners,
    read_line,
    rows,
    scalar,
    start_runner,
    start_writer,
    status,
    stop_all,
    stored_ids,
    transaction_status,
    wait_for,
    wait_until_caught_up,
)
from tests.reliability.subscriber_app import Ticked, make_registry

pytestmark = pytest.mark.slow

WRITERS = 16
EVENTS_PER_WRITER = 650  # at least; 16 x 650 > 10,000 committed events


def test_a_streams_events_are_handled_in_version_order_when_transaction_ids_disagree_with_commit_order(  # noqa: E501
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    registry = make_registry()
    with (
        PostgresEventStore(url, registry=registry) as store,
        psycopg.connect(url) as early,
        psycopg.connect(url) as late,
    ):
        # `early` draws its transaction id first (appending elsewhere) and waits; `late`
        # draws a higher one, appends s@1 and commits; then `early` appends s@2 and
        # commits. So s@1 has the higher transaction id although it committed first.
        store.append("other", Ticked(writer="early", txn=0, n=0), conn=early)
        store.append("s", Ticked(writer="late", txn=0, n=0), conn=late)
        late.commit()
        store.append("s", Ticked(writer="early", txn=0, n=1), conn=early)
        early.commit()
    placed = rows(
        url,
        "SELECT version, transaction_id::text::bigint FROM eventstore.events "
        "WHERE stream_id = 's' ORDER BY version",
    )
    assert placed[0][1] > placed[1][1], "setup: s@1 should have the higher transaction id"

    # Small batches (2, one shard): a reader that bounded its windows by transaction id
    # (2 rows a window) would split the two transactions and hand out s@2 first.
    runner = start_runner(
        url, tmp_path, "A", env={"RELIABILITY_SHARDS": "1", "RELIABILITY_BATCH_SIZE": "2"}
    )
    try:
        wait_until_caught_up(url, 30)
    finally:
        runner.signal(signal.SIGTERM)
        finish([runner], 30)
    assert assert_handled_exactly_once(url) == 3
    handled = [
        r[0] for r in rows(url, "SELECT version FROM handled WHERE stream_id = 's' ORDER BY seq")
    ]
    assert handled == [1, 2], f"stream s handled in the order {handled}"


def test_every_committed_event_is_handled_once_in_stream_order_and_a_long_transaction_holds_back_only_its_own(  # noqa: E501
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    processes: list[Process] = []
    try:
        long = start_writer(url, tmp_path, "long", seed=0, hold=True)
        processes.append(long)
        _, long_xid, long_position = read_line(long, 30, "the long transaction opens").split()
        long_xid_int, long_position_int = int(long_xid), int(long_position)

        # Small batches: many windows and pages, read while the writers commit.
        env = {"RELIABILITY_BATCH_SIZE": "20"}
        runners = [start_runner(url, tmp_path, runner_id, env=env) for runner_id in ("A", "B")]
        processes += runners
        writers = [
            start_writer(url, tmp_path, f"w{n}", seed=n, events=EVENTS_PER_WRITER)
            for n in range(1, WRITERS + 1)
        ]
        processes += writers

        # While the writers run, the subscription keeps up with them: events committed
        # after the long transaction began are handled although it is still open.
        def handled_past_the_long_transaction() -> int:
            return int(
                scalar(
                    url,
                    "SELECT count(*) FROM handled WHERE global_position > %s",
                    (long_position_int,),
                )
            )

        wait_for(
            lambda: handled_past_the_long_transaction() >= 1000,
            60,
            "events after the open long transaction are handled while writers run",
            diagnose=lambda: describe(url),
        )
        finish(writers, 120)

        # The writers are done; the long transaction is still open. Everything else is
        # handled, and the subscription reports no lag: only the long transaction's own
        # events (invisible until it commits) wait.
        wait_until_caught_up(url, 60)
        assert transaction_status(url, long_xid_int) == "in progress"
        assert long.alive()
        stored = int(scalar(url, "SELECT count(*) FROM eventstore.events"))
        assert handled_count(url) == stored
        assert handled_past_the_long_transaction() > stored // 2
        assert not rows(url, "SELECT 1 FROM handled WHERE stream_id = 'long-long'")
        lag = {s.shard: s.lag_events for s in status(url)}
        assert lag == {0: 0, 1: 0, 2: 0, 3: 0}, f"lag while the long transaction is open: {lag}"

        # The long transaction appends once more and commits: its events come through.
        assert long.popen.stdin is not None
        long.popen.stdin.write("commit\n")
        long.popen.stdin.flush()
        assert read_line(long, 30, "the long transaction commits") == "committed"
        finish([long], 30)
        assert transaction_status(url, long_xid_int) == "committed"
        wait_until_caught_up(url, 60)

        outcomes = Outcomes.read(tmp_path)
        stored_set = stored_ids(url)
        assert len(outcomes.committed) >= 10_000
        assert not outcomes.unknown, "no outage here: every outcome is known"
        assert stored_set == outcomes.committed, (
            f"{len(outcomes.committed - stored_set)} acknowledged events not stored, "
            f"{len(stored_set - outcomes.committed)} stored that were not acknowledged"
        )
        assert len(outcomes.rolled_back) > 0.05 * len(outcomes.committed)
        assert not outcomes.rolled_back & stored_set
        assert not outcomes.failed & stored_set
        assert assert_handled_exactly_once(url) == len(outcomes.committed)
        assert len(rows(url, "SELECT 1 FROM handled WHERE stream_id = 'long-long'")) == 10

        # Both runners did the work, the shards spread fairly between them, and both stop
        # gracefully on SIGTERM.
        per_runner = dict(rows(url, "SELECT pid, count(*) FROM handled GROUP BY pid"))
        assert set(per_runner) == {r.pid for r in runners}, per_runner
        wait_for(
            lambda: sorted(owners(url).values(), key=str) == ["A", "A", "B", "B"],
            10,
            "A and B hold two shards each",
            diagnose=lambda: describe(url),
        )
        for runner in runners:
            runner.signal(signal.SIGTERM)
        finish(runners, 30)

        # Last, so that a failure here leaves every check above proven: each stream's
        # events were handled in version order.
        assert_handled_in_stream_order(url)
    finally:
        stop_all(processes)
