"""Helpers of the subscription reliability tests: runner and writer processes, checks.

Runners and writers are real processes (`eventstore subscriptions run ...` and
`tests.reliability.writer`); the tests kill, stop and resume them with signals, and wait
on database conditions with deadlines, never on sleeps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

import psycopg

from eventstore.subscriptions import ShardStatus, SubscriptionStore
from tests.reliability.subscriber_app import HANDLED_TABLE, NAME, make_registry

ROOT: Final = Path(__file__).resolve().parents[2]
# The `eventstore` command line, as `python -m eventstore` runs it.
EVENTSTORE_COMMAND: Final = (sys.executable, "-m", "eventstore")
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Polls ``condition`` until it returns something truthy (returned), or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{diagnose()}" if diagnose is not None else ""
            raise AssertionError(f"{what}: not within {timeout} s{detail}")
        time.sleep(interval)  # the poll interval of a condition, not a wait for a daemon


def rows(url: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type, unused-ignore]


def scalar(url: str, query: str, params: Sequence[Any] = ()) -> Any:
    return rows(url, query, params)[0][0]


def create_handled_table(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(HANDLED_TABLE)  # type: ignore[arg-type, unused-ignore]


def handled_count(url: str) -> int:
    return int(scalar(url, "SELECT count(*) FROM handled"))


def with_application_name(url: str, name: str) -> str:
    """Returns the URL with an application_name, to find a runner's sessions in Postgres."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode({'application_name': name})}"


def status(url: str) -> list[ShardStatus]:
    with SubscriptionStore(url, registry=make_registry(), max_size=1) as store:
        return store.status(NAME)


def owners(url: str) -> dict[int, str | None]:
    """Returns each shard's live owner (None when its lease ran out or nobody holds it)."""
    return {s.shard: s.owner for s in status(url)}


def describe(url: str) -> str:
    """Returns the subscription's state, for a failure message."""
    lines = [
        f"shard {s.shard}: {s.status} owner={s.owner} epoch={s.epoch} handled={s.handled} "
        f"lag={s.lag_events} dead={s.dead_letters} error={s.last_error}"
        for s in status(url)
    ]
    lines.append(f"handled rows: {handled_count(url)}")
    lines.append(f"events: {scalar(url, 'SELECT count(*) FROM eventstore.events')}")
    return "\n".join(lines)


def wait_until_caught_up(url: str, timeout: float) -> None:
    with SubscriptionStore(url, registry=make_registry(), max_size=1) as store:
        store.wait_until_caught_up(NAME, timeout=timeout, poll_interval=0.05)


@dataclasses.dataclass
class Process:
    """A child process with its log file; signals go to its pid only."""

    popen: subprocess.Popen[str]
    log: Path
    label: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILLs the process (resuming it first if stopped) and reaps it."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def close_pipes(self) -> None:
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                pipe.close()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return f"{self.label}: no log"
        return f"--- {self.label} (last {lines} lines of {self.log}):\n" + "\n".join(text[-lines:])


def start_runner(
    url: str,
    log_dir: Path,
    runner_id: str,
    *,
    lease_ttl: float = 2.0,
    poll_interval: float = 0.2,
    env: dict[str, str] | None = None,
) -> Process:
    """Starts ``eventstore subscriptions run`` on the reliability app, as its own process."""
    log = log_dir / f"runner-{runner_id}.log"
    command = [
        *EVENTSTORE_COMMAND,
        "subscriptions",
        "run",
        "tests.reliability.subscriber_app:group",
        "--url",
        with_application_name(url, f"runner-{runner_id}"),
        "--lease-ttl",
        str(lease_ttl),
        "--poll-interval",
        str(poll_interval),
        "--runner-id",
        runner_id,
    ]
    with open(log, "a") as out:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            text=True,
        )
    return Process(popen, log, f"runner {runner_id}")


def start_writer(
    url: str,
    log_dir: Path,
    name: str,
    *,
    seed: int,
    events: int | None = None,
    until: Path | None = None,
    hold: bool = False,
    tolerate_outage: bool = False,
    delay: float = 0.01,
    rollback: float = 0.1,
) -> Process:
    """Starts a `tests.reliability.writer` process; its outcomes go to ``{name}.outcomes``."""
    command = [
        sys.executable,
        "-m",
        "tests.reliability.writer",
        url,
        str(log_dir / f"{name}.outcomes"),
        "--name",
        name,
        "--seed",
        str(seed),
        "--delay",
        str(delay),
        "--rollback",
        str(rollback),
    ]
    if events is not None:
        command += ["--events", str(events)]
    if until is not None:
        command += ["--until", str(until)]
    if hold:
        command.append("--hold")
    if tolerate_outage:
        command.append("--tolerate-outage")
    log = log_dir / f"writer-{name}.log"
    with open(log, "a") as err:
        popen = subprocess.Popen(
            command,
            cwd=ROOT,
            stdout=subprocess.PIPE if hold else err,
            stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
    return Process(popen, log, f"writer {name}")


def finish(processes: Iterable[Process], timeout: float) -> None:
    """Waits for processes that end by themselves, failing on a non-zero exit."""
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            code = process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            # What it waits for: a daemon prints its threads' and tasks' stacks on SIGUSR1.
            size = process.log.stat().st_size if process.log.exists() else 0
            process.signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=2)
            stacks = process.log.read_text(errors="replace")[size:] if process.log.exists() else ""
            raise AssertionError(
                f"{process.label} still running\n{process.tail()}\n{stacks[-20000:]}"
            ) from None
        process.close_pipes()
        assert code == 0, f"{process.label} exited with {code}\n{process.tail()}"


def stop_all(processes: Iterable[Process]) -> None:
    """Kills whatever is still running (the cleanup of a failed test)."""
    for process in processes:
        if process.alive():
            process.signal(signal.SIGCONT)
            process.kill()
        process.close_pipes()


@dataclasses.dataclass
class Outcomes:
    """What the writers report: ids committed, rolled back, failed, or of unknown outcome."""

    committed: set[uuid.UUID] = dataclasses.field(default_factory=set)
    rolled_back: set[uuid.UUID] = dataclasses.field(default_factory=set)
    failed: set[uuid.UUID] = dataclasses.field(default_factory=set)
    unknown: set[uuid.UUID] = dataclasses.field(default_factory=set)
    transactions: int = 0

    @classmethod
    def read(cls, log_dir: Path) -> Outcomes:
        found = cls()
        kinds = {"C": found.committed, "R": found.rolled_back, "F": found.failed}
        for path in sorted(log_dir.glob("*.outcomes")):
            for line in path.read_text().splitlines():
                kind, _, ids = line.partition(" ")
                found.transactions += 1
                kinds.get(kind, found.unknown).update(uuid.UUID(i) for i in ids.split(",") if i)
        return found


def stored_ids(url: str) -> set[uuid.UUID]:
    return {r[0] for r in rows(url, "SELECT event_id FROM eventstore.events")}


def assert_handled_exactly_once(url: str) -> int:
    """Checks ``handled`` against the log: every stored event handled once, none other.

    Returns how many events there are.
    """
    duplicates = rows(
        url,
        "SELECT event_id, count(*), array_agg(pid ORDER BY seq), array_agg(shard ORDER BY seq) "
        "FROM handled GROUP BY event_id HAVING count(*) > 1 LIMIT 10",
    )
    assert not duplicates, f"events handled more than once (id, times, pids, shards): {duplicates}"
    missing = rows(
        url,
        "SELECT e.global_position, e.stream_id, e.version, e.transaction_id::text "
        "FROM eventstore.events e LEFT JOIN handled h USING (event_id) "
        "WHERE h.event_id IS NULL ORDER BY e.global_position",
    )
    assert not missing, f"{len(missing)} stored events never handled, e.g. {missing[:10]}"
    phantom = rows(
        url,
        "SELECT h.event_id FROM handled h LEFT JOIN eventstore.events e USING (event_id) "
        "WHERE e.event_id IS NULL LIMIT 10",
    )
    assert not phantom, f"handled events that are not stored: {phantom}"
    mismatched = rows(
        url,
        "SELECT h.event_id FROM handled h JOIN eventstore.events e USING (event_id) "
        "WHERE (h.global_position, h.stream_id, h.version) "
        "<> (e.global_position, e.stream_id, e.version) LIMIT 10",
    )
    assert not mismatched, f"handled with other coordinates than stored: {mismatched}"
    dead = rows(url, "SELECT stream_id, reason, error FROM eventstore.dead_letters LIMIT 5")
    assert not dead, f"dead letters: {dead}"
    stored = int(scalar(url, "SELECT count(*) FROM eventstore.events"))
    # The checkpoints count what they handled in the same transactions as the handler.
    counted = int(scalar(url, "SELECT sum(handled) FROM eventstore.checkpoints"))
    assert counted == stored, f"checkpoints counted {counted} handled events, {stored} stored"
    return stored


def assert_handled_in_stream_order(url: str) -> None:
    """Checks that each stream's events were handled in version order (after exactly once).

    Every event is handled once, so a stream's versions in handling order (``seq``) must be
    1, 2, 3, ... The failure shows the first offending stream: each event's version,
    position, transaction id and shard, in handling order.
    """
    out_of_order = rows(
        url,
        "SELECT stream_id, count(*) FROM (SELECT stream_id, version, "
        "row_number() OVER (PARTITION BY stream_id ORDER BY seq) AS nth FROM handled) t "
        "WHERE version <> nth GROUP BY stream_id ORDER BY stream_id",
    )
    if not out_of_order:
        return
    stream = out_of_order[0][0]
    detail = rows(
        url,
        "SELECT h.seq, h.version, e.global_position, e.transaction_id::text, h.shard "
        "FROM handled h JOIN eventstore.events e USING (event_id) "
        "WHERE h.stream_id = %s ORDER BY h.seq",
        (stream,),
    )
    wrong = [d for n, d in enumerate(detail, start=1) if d[1] != n]
    raise AssertionError(
        f"{len(out_of_order)} streams had events handled out of version order "
        f"(stream, events off their place): {out_of_order[:10]}\n"
        f"{stream} in handling order (seq, version, position, transaction id, shard), "
        f"around the first misplaced event: {_around(detail, detail.index(wrong[0]))}"
    )


def _around(items: list[T], index: int, context: int = 4) -> list[T]:
    return items[max(0, index - context) : index + context + 1]


def runner_sessions(url: str, runner_id: str, where: str = "true") -> list[tuple[Any, ...]]:
    """Returns ``(pid, state, backend_xid, query)`` of a runner's sessions in Postgres."""
    return rows(
        url,
        "SELECT pid, state, backend_xid::text::bigint, query FROM pg_stat_activity "
        f"WHERE application_name = %s AND datname = current_database() AND ({where})",
        (f"runner-{runner_id}",),
    )


def in_flight_batches(url: str, runner_id: str) -> list[int]:
    """Returns the transaction ids of a runner's batches that have written, uncommitted."""
    return [
        r[2]
        for r in runner_sessions(
            url, runner_id, "backend_xid IS NOT NULL AND query LIKE '%%pg_sleep%%'"
        )
    ]


def transaction_status(url: str, xid: int) -> str:
    return str(scalar(url, "SELECT pg_xact_status(%s::text::xid8)", (str(xid),)))


def read_line(process: Process, timeout: float, what: str) -> str:
    """Reads a line of a child's stdout, failing the test when none comes in time."""
    stdout = process.popen.stdout
    assert stdout is not None
    ready, _, _ = select.select([stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"{what}: no line within {timeout} s\n{process.tail()}")
    line = stdout.readline()
    assert line, f"{what}: {process.label} closed its output\n{process.tail()}"
    return line.strip()
