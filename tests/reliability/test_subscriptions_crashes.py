"""Subscriptions survive crashes: killed and frozen runners, a restarting Postgres.

Runners are real `eventstore subscriptions run` processes, writers real processes too; the
handler records each event in ``handled`` inside the batch's transaction, so "exactly
once" is checked against the log itself after a final catch-up.
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from eventstore import migrate
from eventstore.postgres.embedded import start_embedded_postgres, stop_embedded_postgres
from tests.reliability.harness import (
    Outcomes,
    Process,
    assert_handled_exactly_once,
    create_handled_table,
    describe,
    finish,
    handled_count,
    in_flight_batches,
    owners,
    rows,
    runner_sessions,
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

pytestmark = pytest.mark.slow

KILLS = 20


def assert_writers_outcomes_match_the_log(url: str, log_dir: Path) -> Outcomes:
    """Acknowledged events are stored, refused ones are not, nothing else is stored."""
    outcomes = Outcomes.read(log_dir)
    stored = stored_ids(url)
    assert outcomes.committed <= stored, (
        f"{len(outcomes.committed - stored)} acknowledged events are not stored"
    )
    assert not (outcomes.rolled_back | outcomes.failed) & stored
    assert stored <= outcomes.committed | outcomes.unknown, "stored events nobody appended"
    return outcomes


KILL_POINTS = ("connected", "holding", "mid-batch", "after-progress")


def _kill_point(
    url: str, mode: str, runner_id: str, pid: int, progress: int
) -> Callable[[], object]:
    """Returns the condition to kill a runner on: where in its life the kill lands."""
    if mode == "connected":  # anywhere in its start: claiming, the first window, ...
        return lambda: runner_sessions(url, runner_id)
    if mode == "holding":  # it holds a shard, in its first batches or between them
        return lambda: scalar(
            url, "SELECT count(*) FROM eventstore.checkpoints WHERE owner = %s", (runner_id,)
        )
    if mode == "mid-batch":  # a batch has written and not committed
        return lambda: in_flight_batches(url, runner_id)
    return lambda: scalar(  # after it committed some batches
        url, "SELECT count(*) >= %s FROM handled WHERE pid = %s", (progress, pid)
    )


def _describe_with(url: str, process: Process) -> str:
    return f"{describe(url)}\n{process.tail()}"


def _settled(url: str, xids: list[int]) -> list[str] | None:
    """Returns how these transactions ended, or None while one is still in progress."""
    statuses = [transaction_status(url, xid) for xid in xids]
    return None if "in progress" in statuses else statuses or ["none"]


def test_runners_killed_at_random_points_leave_every_event_handled_exactly_once(
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    # Small batches that sleep after writing, so kills land inside batches.
    env = {"RELIABILITY_BATCH_SIZE": "25", "RELIABILITY_HANDLER_DELAY": "0-0.05"}
    ttl = 1.0
    stop_writers = tmp_path / "stop-writers"
    writers = [
        start_writer(url, tmp_path, f"w{n}", seed=n, until=stop_writers, delay=0.03)
        for n in range(2)
    ]
    slots = {slot: start_runner(url, tmp_path, f"{slot}0", lease_ttl=ttl, env=env) for slot in "ab"}
    ids = {slot: f"{slot}0" for slot in "ab"}
    spent: list[Process] = []
    kills: Counter[str] = Counter()
    cut = 0
    try:
        for cycle in range(1, KILLS + 1):
            slot = rng.choice("ab")
            victim, runner_id = slots[slot], ids[slot]
            mode = rng.choice(KILL_POINTS)
            condition = _kill_point(url, mode, runner_id, victim.pid, rng.randint(1, 200))
            wait_for(
                condition,
                30,
                f"kill {cycle} ({mode}) of runner {runner_id} (seed {seed})",
                interval=0.02,
                diagnose=partial(_describe_with, url, victim),
            )
            open_batches = in_flight_batches(url, runner_id)
            victim.kill()
            assert victim.popen.returncode == -signal.SIGKILL, victim.tail()
            kills[mode] += 1
            # A batch open at the kill that then aborted was cut in the middle.
            ended = wait_for(
                partial(_settled, url, open_batches), 30, "the killed runner's batches end"
            )
            cut += "aborted" in ended
            spent.append(victim)
            ids[slot] = f"{slot}{cycle}"
            slots[slot] = start_runner(url, tmp_path, ids[slot], lease_ttl=ttl, env=env)

        stop_writers.touch()
        finish(writers, 60)
        wait_until_caught_up(url, 90)
        outcomes = assert_writers_outcomes_match_the_log(url, tmp_path)
        assert not outcomes.unknown
        stored = assert_handled_exactly_once(url)
        assert stored == len(outcomes.committed)
        assert sum(kills.values()) == KILLS
        # Some kills cut a batch that had written, and its writes were rolled back.
        assert cut >= 1, f"no kill landed inside a batch: {kills}"
        print(f"seed {seed}: {stored} events, kills {dict(kills)}, {cut} cut a batch")
    finally:
        stop_writers.touch()
        stop_all([*writers, *slots.values(), *spent])


def test_a_runner_frozen_past_its_lease_is_fenced_and_nothing_is_applied_twice(
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    # Batches spend most of their time asleep after writing: a stop lands inside them.
    env = {"RELIABILITY_BATCH_SIZE": "20", "RELIABILITY_HANDLER_DELAY": "0.3"}
    stop_writers = tmp_path / "stop-writers"
    writers = [
        start_writer(url, tmp_path, f"w{n}", seed=n, until=stop_writers, delay=0.05)
        for n in range(2)
    ]
    first = start_runner(url, tmp_path, "A", env=env)
    processes = [*writers, first]
    try:
        wait_for(lambda: set(owners(url).values()) == {"A"}, 20, "A holds every shard")
        frozen = _freeze_inside_batches(url, first, "A")

        second = start_runner(url, tmp_path, "B", env=env)
        processes.append(second)
        wait_for(
            lambda: set(owners(url).values()) == {"B"},
            20,
            "B takes every shard of the frozen A",
            diagnose=lambda: describe(url),
        )
        assert all(transaction_status(url, xid) == "in progress" for xid in frozen)
        # B goes on handling (the events of A's open batches among them).
        handled_while_frozen = handled_count(url)
        wait_for(
            lambda: handled_count(url) > handled_while_frozen + 100,
            30,
            "B handles events while A is frozen",
        )

        resumed_at = scalar(url, "SELECT clock_timestamp()")
        first.signal(signal.SIGCONT)
        # A's open batches find their epoch gone and roll back: nothing of them commits.
        wait_for(
            lambda: all(transaction_status(url, xid) == "aborted" for xid in frozen),
            20,
            "A's batches from before the freeze are fenced and rolled back",
            diagnose=lambda: f"{[transaction_status(url, x) for x in frozen]}\n{first.tail()}",
        )
        # Both keep running, and share the shards again.
        wait_for(
            lambda: sorted(owners(url).values(), key=str) == ["A", "A", "B", "B"],
            30,
            "A and B share the shards after A resumes",
            diagnose=lambda: f"{describe(url)}\n{first.tail()}",
        )
        assert first.alive() and second.alive()

        stop_writers.touch()
        finish(writers, 60)
        wait_until_caught_up(url, 60)
        outcomes = assert_writers_outcomes_match_the_log(url, tmp_path)
        assert assert_handled_exactly_once(url) == len(outcomes.committed)
        # A handled events both before the freeze and after it resumed.
        pids = {r[0] for r in rows(url, "SELECT DISTINCT pid FROM handled")}
        assert pids == {first.pid, second.pid}
        assert scalar(
            url,
            "SELECT count(*) FROM handled WHERE pid = %s AND handled_at > %s",
            (first.pid, resumed_at),
        ), "A handled nothing after it resumed"
        for runner in (first, second):
            runner.signal(signal.SIGTERM)
        finish([first, second], 30)
    finally:
        stop_writers.touch()
        stop_all(processes)


def _freeze_inside_batches(url: str, runner: Process, runner_id: str) -> list[int]:
    """SIGSTOPs a runner while each of its four workers is inside a batch that has written.

    Returns the transaction ids of the frozen batches. A freeze is kept only if every
    frozen transaction stopped in the handler: one that got as far as moving its checkpoint
    would hold the checkpoint row's lock, and no runner could take that shard (the
    test's timing, not the engine's fault); such a freeze is undone and tried again.
    """
    for _ in range(10):
        wait_for(
            lambda: len(in_flight_batches(url, runner_id)) == 4,
            30,
            f"four batches of {runner_id} in flight at once",
            interval=0.01,
            diagnose=lambda: describe(url),
        )
        runner.signal(signal.SIGSTOP)
        # The server finishes the sleeps; then each open transaction is idle.
        wait_for(
            lambda: not runner_sessions(url, runner_id, "state = 'active'"),
            10,
            f"{runner_id}'s sessions settle once it is frozen",
        )
        open_ = runner_sessions(url, runner_id, "backend_xid IS NOT NULL")
        if open_ and all("pg_sleep" in query for *_, query in open_):
            return [xid for _, _, xid, _ in open_]
        runner.signal(signal.SIGCONT)
    raise AssertionError("could not freeze the runner inside its batches")


def test_no_acknowledged_event_is_lost_or_handled_twice_when_postgres_restarts_under_load(
    tmp_path: Path,
) -> None:
    # A server of this test's own (the embedded one): restarting the shared test server
    # would cut every other test and benchmark using it. Its data directory is not under
    # pytest's base temp, whose permissions a concurrent pytest session resets (0700), which
    # would lock the server's own user out.
    pgdata = Path(tempfile.mkdtemp(prefix="eventstore-restart-")) / "pgdata"
    url = start_embedded_postgres(pgdata)
    port = urlsplit(url).port
    processes: list[Process] = []
    stop_writers = tmp_path / "stop-writers"
    try:
        migrate.upgrade(url)
        create_handled_table(url)
        env = {"RELIABILITY_BATCH_SIZE": "25", "RELIABILITY_HANDLER_DELAY": "0-0.02"}
        writers = [
            start_writer(url, tmp_path, f"w{n}", seed=n, until=stop_writers, tolerate_outage=True)
            for n in range(4)
        ]
        runners = [start_runner(url, tmp_path, runner_id, env=env) for runner_id in ("A", "B")]
        processes += [*writers, *runners]

        def acknowledged() -> int:
            return len(Outcomes.read(tmp_path).committed)

        wait_for(lambda: handled_count(url) >= 500, 30, "the runners handle events")
        before = acknowledged()
        # A restart (fast shutdown: every session is cut, in flight or idle) on the same
        # port, so that writers and runners reconnect with the URL they hold.
        stop_embedded_postgres(pgdata)
        start_embedded_postgres(pgdata, port=port)
        wait_for(lambda: _answers(url), 60, "Postgres answers again")
        # Writers and runners come back by themselves.
        wait_for(
            lambda: acknowledged() >= before + 500,
            60,
            "writers append again after the restart",
            diagnose=lambda: "\n".join(w.tail(5) for w in writers),
        )
        stored_after = int(scalar(url, "SELECT count(*) FROM eventstore.events"))
        wait_for(
            lambda: handled_count(url) >= stored_after,
            60,
            "runners handle again after the restart",
            diagnose=lambda: f"{describe(url)}\n" + "\n".join(r.tail(10) for r in runners),
        )
        stop_writers.touch()
        finish(writers, 60)
        assert all(r.alive() for r in runners), "\n".join(r.tail() for r in runners)
        wait_until_caught_up(url, 60)
        outcomes = assert_writers_outcomes_match_the_log(url, tmp_path)
        assert outcomes.unknown, "no transaction was cut by the restart"
        stored = assert_handled_exactly_once(url)
        print(f"{stored} events; {len(outcomes.unknown)} of unknown outcome at the restart")
        for runner in runners:
            runner.signal(signal.SIGTERM)
        finish(runners, 30)
    finally:
        stop_writers.touch()
        stop_all(processes)
        stop_embedded_postgres(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def _answers(url: str) -> bool:
    try:
        return bool(scalar(url, "SELECT 1") == 1)
    except Exception:
        return False


def test_a_killed_owners_shards_are_resumed_by_another_runner_within_the_lease_ttl_and_a_second(
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    ttl = 2.0
    stop_writers = tmp_path / "stop-writers"
    writer = start_writer(url, tmp_path, "w", seed=1, until=stop_writers)
    first = start_runner(url, tmp_path, "A", lease_ttl=ttl)
    second = start_runner(url, tmp_path, "B", lease_ttl=ttl)
    processes = [writer, first, second]
    try:
        wait_for(
            lambda: sorted(owners(url).values(), key=str) == ["A", "A", "B", "B"],
            30,
            "A and B share the shards",
            diagnose=lambda: describe(url),
        )
        wait_for(
            lambda: scalar(url, "SELECT count(*) FROM handled WHERE pid = %s", (first.pid,)),
            30,
            "A handles events",
        )
        first.kill()
        killed_at = time.monotonic()
        wait_for(
            lambda: set(owners(url).values()) == {"B"},
            ttl + 10,
            "B takes over A's shards",
            interval=0.02,
            diagnose=lambda: describe(url),
        )
        took = time.monotonic() - killed_at
        # The lease runs out at most ttl after A's last renewal, then B's next membership
        # cycle (every ttl / 3) claims; 0.3 s covers this test's polling.
        assert took < ttl + 1 + 0.3, f"B took A's shards {took:.2f} s after the kill"
        print(f"B held every shard {took:.2f} s after A was killed (lease ttl {ttl} s)")

        stop_writers.touch()
        finish([writer], 60)
        wait_until_caught_up(url, 60)
        outcomes = assert_writers_outcomes_match_the_log(url, tmp_path)
        assert assert_handled_exactly_once(url) == len(outcomes.committed)
    finally:
        stop_writers.touch()
        stop_all(processes)


def test_a_runner_restarted_under_the_same_runner_id_takes_its_shards_back(
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    runner = start_runner(url, tmp_path, "stable-id")
    processes = [runner]
    try:
        wait_for(lambda: set(owners(url).values()) == {"stable-id"}, 20, "the runner holds all")
        epochs = {s.shard: s.epoch for s in status(url)}
        runner.kill()
        # Restarted by its supervisor under the same name (a pod name, a unit name).
        runner = start_runner(url, tmp_path, "stable-id")
        processes.append(runner)
        # It takes the shards back under new epochs, which fence out the old process
        # should it still be alive somewhere.
        wait_for(
            lambda: all(s.owner == "stable-id" and s.epoch > epochs[s.shard] for s in status(url)),
            10,
            "the restarted runner takes its shards back under new epochs",
            diagnose=lambda: describe(url),
        )
        writer = start_writer(url, tmp_path, "w", seed=1, events=100)
        processes.append(writer)
        finish([writer], 60)
        wait_until_caught_up(url, 8)
        outcomes = assert_writers_outcomes_match_the_log(url, tmp_path)
        assert assert_handled_exactly_once(url) == len(outcomes.committed)
    finally:
        stop_all(processes)


def test_a_runner_prints_its_threads_and_tasks_on_sigusr1_and_goes_on(
    eventstore_database_url: str, tmp_path: Path
) -> None:
    url = eventstore_database_url
    create_handled_table(url)
    runner = start_runner(url, tmp_path, "dumped")
    try:
        wait_for(lambda: set(owners(url).values()) == {"dumped"}, 20, "the runner holds all")
        runner.signal(signal.SIGUSR1)
        wait_for(
            lambda: "--- asyncio tasks" in runner.log.read_text(errors="replace"),
            10,
            "the runner prints its stacks",
        )
        text = runner.log.read_text(errors="replace")
        assert "--- threads" in text and "most recent call first" in text, text[-2000:]
        assert runner.alive()
        runner.signal(signal.SIGTERM)
        finish([runner], 30)
    finally:
        stop_all([runner])
