"""Measures one hot aggregate: 1 writer vs 8 writers optimistic vs 8 writers serialised.

Run ``python benchmarks/hot_aggregate.py [--url URL] [--quick] [--json PATH]``. Every writer
is its own OS process with its own connection, running `Repository.update` on one counter
aggregate for a fixed time. The script prints commands per second, retries per command and
the ratios to one writer, checks that no update was lost (the final count equals the
commands the writers report) and checks the bar of issue 8 item 4: 8 serialised writers
reach at least 0.8x one writer's commands per second. The exit status is 1 when a bar
fails or an update was lost.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Barrier
from typing import Any, ClassVar, Final

import psycopg
from _common import (
    Bar,
    admin_url,
    check_bars,
    format_bars,
    parse_args,
    progress,
    scratch_database,
    server_version,
    settle,
    write_json,
)

from eventstore import Aggregate, Event, EventRegistry, PostgresEventStore, Repository, applies
from eventstore.migrate import upgrade

SNAPSHOT_EVERY: Final = 100


class Bumped(Event):
    """Records one increment of the counter."""

    event_type: ClassVar[str] = "bench.Bumped"


class Counter(Aggregate):
    """Counts its increments: the smallest aggregate with a command."""

    category: ClassVar[str] = "counter"
    count: int = 0

    @applies
    def _bumped(self, event: Bumped) -> None:
        self.count += 1

    def bump(self) -> None:
        """Records an increment."""
        self.record(Bumped())


REGISTRY: Final = EventRegistry([Bumped])


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """Names a run: how many writer processes, and whether they serialise on the stream."""

    name: str
    writers: int
    serialize: bool


SCENARIOS: Final = (
    Scenario("1 writer", 1, False),
    Scenario("8 writers, optimistic", 8, False),
    Scenario("8 writers, serialised", 8, True),
)


def writer(
    url: str, aggregate_id: str, serialize: bool, seconds: float, start: Barrier, out: Any
) -> None:
    """Runs updates for ``seconds`` after every writer is ready; sends (commands, retries)."""
    with PostgresEventStore(url, registry=REGISTRY, min_size=1, max_size=1) as store:
        store.stream_info("warm-up")  # open the connection before the clock starts
        repo = Repository(
            store, Counter, serialize=serialize, attempts=1000, snapshot_every=SNAPSHOT_EVERY
        )
        start.wait()
        deadline = time.monotonic() + seconds
        commands = 0
        while time.monotonic() < deadline:
            repo.update(aggregate_id, Counter.bump)
            commands += 1
        out.send((commands, repo.retries))


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """Holds one round of one scenario."""

    scenario: str
    commands: int
    retries: int
    seconds: float
    stored: int

    @property
    def per_second(self) -> float:
        """Returns the commands per second of all writers together."""
        return self.commands / self.seconds

    def as_dict(self) -> dict[str, Any]:
        """Returns the round as JSON-ready data."""
        return {**dataclasses.asdict(self), "per_second": self.per_second}


def run(url: str, scenario: Scenario, aggregate_id: str, seconds: float) -> Run:
    """Runs one round: creates the aggregate, starts the writers, checks the final count."""
    settle(url)  # every round starts from a checkpoint: the rounds are bound by WAL flushes
    with PostgresEventStore(url, registry=REGISTRY) as store:
        repo = Repository(store, Counter, snapshot_every=SNAPSHOT_EVERY)
        repo.create(aggregate_id, Counter.bump)
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(scenario.writers + 1)
        pipes = [context.Pipe(duplex=False) for _ in range(scenario.writers)]
        processes = [
            context.Process(
                target=writer,
                args=(url, aggregate_id, scenario.serialize, seconds, start, sender),
            )
            for _, sender in pipes
        ]
        for process in processes:
            process.start()
        start.wait()
        began = time.monotonic()
        results = [receiver.recv() for receiver, _ in pipes]
        elapsed = time.monotonic() - began
        for process in processes:
            process.join()
        stored = repo.get(aggregate_id).count - 1
    return Run(
        scenario=scenario.name,
        commands=sum(r[0] for r in results),
        retries=sum(r[1] for r in results),
        seconds=max(seconds, min(elapsed, seconds * 1.5)),
        stored=stored,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every scenario in alternating rounds and prints medians and ratios."""
    args = parse_args(argv, __doc__, "a server to create a scratch database on")
    # Five rounds: with three, one slow round (the first of a run is the coldest) moved the
    # median by several points (one scenario's rounds spread 1,206-1,541 commands/s).
    rounds, seconds = (1, 2.0) if args.quick else (5, 5.0)
    url = admin_url(args.url)
    with psycopg.connect(url) as conn:
        version = server_version(conn)
    print(f"server: PostgreSQL {version}; CPUs: {os.cpu_count()}; Python {sys.version.split()[0]}")
    print(f"{rounds} round(s) of {seconds:.0f} s per scenario; snapshots every {SNAPSHOT_EVERY}")
    runs: dict[str, list[Run]] = {s.name: [] for s in SCENARIOS}
    lost = 0
    with scratch_database(url) as database:
        upgrade(database)
        for n in range(rounds):
            for scenario in SCENARIOS:
                progress(f"round {n + 1}/{rounds}: {scenario.name}")
                result = run(
                    database, scenario, f"{scenario.writers}-{scenario.serialize}-{n}", seconds
                )
                lost += result.commands - result.stored
                runs[scenario.name].append(result)
    base = statistics.median(r.per_second for r in runs[SCENARIOS[0].name])
    ratios: dict[str, float] = {}
    print(f"\n{'scenario':<24}{'commands/s':>12}{'ratio':>8}{'retries/command':>18}")
    for scenario in SCENARIOS:
        rs = runs[scenario.name]
        rate = statistics.median(r.per_second for r in rs)
        ratios[scenario.name] = rate / base
        retries = sum(r.retries for r in rs) / max(1, sum(r.commands for r in rs))
        print(f"{scenario.name:<24}{rate:>12.0f}{rate / base:>8.2f}{retries:>18.3f}")
    print(f"lost updates: {lost}")
    bars = [Bar("8 writers, serialised", 0.8, "8 serialised writers vs 1 writer")]
    checked = check_bars(ratios, bars)
    print(format_bars(checked))
    if args.json:
        every = [r for rs in runs.values() for r in rs]
        context = {"server": version, "cpus": os.cpu_count(), "ratios": ratios, "lost": lost}
        write_json(args.json, every, checked, context)
    return 0 if lost == 0 and all(ok for _, _, ok in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
