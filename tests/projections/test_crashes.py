"""The projection daemon SIGKILLed again and again: the read model still equals a replay.

The daemon is a real ``eventstore projections run`` process, the writers real processes
too (`tests.reliability.writer`); the test kills the daemon at random points while it
catches up with a backlog and then while it follows live appends, restarts it, and at the
end compares the read model, through its view, with a fresh replay of the log, row for row.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Final

import pytest

from eventstore.subscriptions import SubscriptionStore
from tests.projections.app import make_registry, read_model, replay_of_log
from tests.projections.support import append_ticks
from tests.reliability.harness import (
    EVENTSTORE_COMMAND,
    ROOT,
    Process,
    finish,
    in_flight_batches,
    rows,
    runner_sessions,
    scalar,
    start_writer,
    stop_all,
    transaction_status,
    wait_for,
    with_application_name,
)

pytestmark = pytest.mark.slow

KILLS: Final = 20
SUBSCRIPTION: Final = "projection:tally:v1"
KILL_POINTS: Final = ("connected", "mid-batch", "after-progress")


def start_daemon(url: str, log_dir: Path, runner_id: str, env: dict[str, str]) -> Process:
    """Starts ``eventstore projections run`` on the test app, as its own process."""
    log = log_dir / "daemon.log"
    command = [
        *EVENTSTORE_COMMAND,
        "projections",
        "run",
        "tests.projections.app:group",
        "--url",
        with_application_name(url, f"runner-{runner_id}"),
        "--runner-id",
        runner_id,  # the same id on every restart: the shards are taken back at once
        "--lease-ttl",
        "2",
        "--poll-interval",
        "0.2",
    ]
    with open(log, "a") as out:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            text=True,
        )
    return Process(popen, log, f"daemon {runner_id}")


def handled(url: str) -> int:
    """Returns how many events the projection's checkpoints say were handled."""
    query = "SELECT coalesce(sum(handled), 0) FROM eventstore.checkpoints WHERE name = %s"
    return int(scalar(url, query, (SUBSCRIPTION,)))


def backlog(url: str) -> int:
    """Returns how many stored events are not handled yet (every event here is handled)."""
    return int(scalar(url, "SELECT count(*) FROM eventstore.events")) - handled(url)


def kill_point(url: str, mode: str, runner_id: str, progress: int) -> Callable[[], object]:
    """Returns the condition to kill the daemon on: where in its life the kill lands."""
    if mode == "connected":  # anywhere in its start: preparing, claiming, a first batch
        return lambda: runner_sessions(url, runner_id)
    if mode == "mid-batch":  # a batch has written and not committed
        return lambda: in_flight_batches(url, runner_id)
    target = handled(url) + progress  # after it committed some batches
    return lambda: handled(url) >= target


def settled(url: str, xids: list[int]) -> list[str] | None:
    statuses = [transaction_status(url, xid) for xid in xids]
    return None if "in progress" in statuses else statuses or ["none"]


def describe(url: str, daemon: Process) -> str:
    return f"handled {handled(url)}, backlog {backlog(url)}\n{daemon.tail()}"


def test_the_daemon_killed_at_random_points_leaves_the_read_model_equal_to_a_replay(
    url: str, tmp_path: Path
) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    append_ticks(url, streams=50, per_stream=60)  # 3,000 events to catch up on
    # Small batches that sleep after writing, so kills land inside batches.
    env = {
        "PROJECTION_VERSIONS": "1",
        "PROJECTION_BATCH_SIZE": "20",
        "PROJECTION_HANDLER_DELAY": "0.01-0.06",
    }
    stop_writers = tmp_path / "stop-writers"
    # About 30 events a second, in transactions that commit out of position order.
    writers = [start_writer(url, tmp_path, "w0", seed=seed, until=stop_writers, delay=0.3)]
    daemon = start_daemon(url, tmp_path, "d", env)
    spent: list[Process] = []
    kills: list[tuple[str, str, int]] = []  # (phase, kill point, backlog at the kill)
    cut = 0
    try:
        for cycle in range(1, KILLS + 1):
            phase = "catch-up" if cycle <= KILLS // 2 else "live"
            if cycle == KILLS // 2 + 1:  # the backlog handled, kills land in live appends
                with SubscriptionStore(url, registry=make_registry(), max_size=1) as store:
                    store.wait_until_caught_up(SUBSCRIPTION, timeout=90)
            mode = rng.choice(KILL_POINTS)
            found = wait_for(
                kill_point(url, mode, "d", rng.randint(5, 100)),
                30,
                f"kill {cycle} ({phase}, {mode}) (seed {seed})",
                interval=0.02,
                diagnose=partial(describe, url, daemon),
            )
            # Mid-batch, what the condition found; else whatever is open now.
            open_batches = found if mode == "mid-batch" else in_flight_batches(url, "d")
            daemon.kill()
            kills.append((phase, mode, backlog(url)))
            assert daemon.popen.returncode == -signal.SIGKILL, daemon.tail()
            ended = wait_for(partial(settled, url, open_batches), 30, "its batches end")
            cut += "aborted" in ended
            spent.append(daemon)
            daemon = start_daemon(url, tmp_path, "d", env)

        stop_writers.touch()
        finish(writers, 60)
        with SubscriptionStore(url, registry=make_registry(), max_size=1) as store:
            store.wait_until_caught_up(SUBSCRIPTION, timeout=90)
        dead = rows(url, "SELECT stream_id, version, error FROM eventstore.dead_letters LIMIT 5")
        assert not dead, f"dead letters: {dead}"
        expected = replay_of_log(url)
        assert read_model(url) == expected  # row for row, through the view
        stored = int(scalar(url, "SELECT count(*) FROM eventstore.events"))
        assert handled(url) == stored == sum(r[0] for r in expected.values())
        catching_up = [b for phase, _, b in kills if phase == "catch-up"]
        following = [b for phase, _, b in kills if phase == "live"]
        assert max(following) < min(catching_up), f"kills not in both phases: {kills}"
        assert cut >= 1, f"no kill landed inside a batch: {kills}"
        print(f"seed {seed}: {stored} events, kills {kills}, {cut} cut a batch")
    finally:
        stop_writers.touch()
        stop_all([*writers, daemon, *spent])
