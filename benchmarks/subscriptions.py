"""Measures the subscription engine: catch-up, scaling, live latency, wake-up cost, takeover.

Run ``python benchmarks/subscriptions.py [--url URL] [--json PATH] [size flags]`` in an
environment that has `eventsourcing` (see ``benchmarks/requirements-aggregates.txt``; it is
never a dependency of the project), or with ``--skip-eventsourcing`` in the project's own.
The script creates scratch databases on the server behind ``--url`` (default:
``EVENTSTORE_DATABASE_URL``, else a local server) and measures, in one run:

- catch-up of ``--events`` events (100 per stream) through a subscription whose sync
  handler upserts a counter per stream, one upsert per event (`execute_many`), run by a
  `SubscriptionRunner` in this process (one shard, batches of 1,000), against a raw
  psycopg loop doing the same work (keyset pages of 1,000 by global_position, one
  transaction per page, a checkpoint row per page; its upserts by psycopg's
  ``executemany``, and for information by `execute_many` too) and against
  `eventsourcing`'s ``ProjectionRunner`` with an equivalent Postgres view;
- the same catch-up of the newest ``--events`` events of a table of ``--big-events``, and
  once, for information, the catch-up of that whole table from its start;
- the latency from an append's commit to the handler, with 4 writer processes appending
  single events at ``--live-rate`` events/s in total, with the default runner (its watcher
  looks at Postgres's snapshot every 50 ms) and with polling only (every 0.5 s);
- single-event appends from 4 writer processes while a caught-up runner handles them (its
  wake-ups enabled) and with no runner at all;
- the time a runner takes to hold every shard after the runner that held them was killed.

Rounds of the sides of a scenario alternate (each catch-up round after a ``CHECKPOINT``, so
that none pays for the WAL the one before it wrote); the table shows medians and ratios.
The exit status is 1 when a bar fails, 2 when `eventsourcing` is missing (and not skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import random
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar, Final
from uuid import UUID

import psycopg
from _common import (
    DEFAULT_URL,
    admin_url,
    plural,
    progress,
    scratch_database,
    server_version,
    settle,
)
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from eventstore import NO_STREAM, Event, EventRegistry, PostgresEventStore
from eventstore.migrate import upgrade
from eventstore.postgres.pipelined import execute_many
from eventstore.subscriptions import (
    AsyncSubscriptionStore,
    Batch,
    Subscription,
    SubscriptionRunner,
    SubscriptionStore,
)
from eventstore.subscriptions.runner import tune_gc

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate as ESAggregate
    from eventsourcing.domain import event
    from eventsourcing.persistence import Tracking
    from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
    from eventsourcing.projection import Projection, ProjectionRunner
except ImportError as missing:
    ES_MISSING: str | None = str(missing)
else:
    ES_MISSING = None

EVENTS_PER_STREAM: Final = 100
BATCH_SIZE: Final = 1000
WRITERS: Final = 4
LIVE_STREAMS_PER_WRITER: Final = 25
TAKEOVER_SHARDS: Final = 4
POLL: Final = 0.02
CATCHUP_LEASE_TTL: Final = 10.0


class Deposited(Event):
    """Records money paid into an account (the payload of every event measured here)."""

    event_type: ClassVar[str] = "bench.Deposited"
    account_id: str
    amount: int
    currency: str
    note: str


REGISTRY: Final = EventRegistry([Deposited])


def deposits(stream_id: str, count: int) -> list[Deposited]:
    """Builds ``count`` deposits for one account."""
    return [
        Deposited(account_id=stream_id, amount=100 + n, currency="EUR", note="salary, March")
        for n in range(count)
    ]


def stream_sizes(total: int) -> list[int]:
    """Splits ``total`` events into streams of `EVENTS_PER_STREAM` (the last may be shorter)."""
    full, rest = divmod(total, EVENTS_PER_STREAM)
    return [EVENTS_PER_STREAM] * full + ([rest] if rest else [])


# The read model of every catch-up: a counter per stream, one upsert per event.
COUNTERS_DDL: Final = (
    "CREATE SCHEMA bench; "
    "CREATE TABLE bench.counters (stream_id text PRIMARY KEY, n bigint NOT NULL); "
    "CREATE TABLE bench.raw_checkpoints (name text PRIMARY KEY, position bigint NOT NULL)"
)
UPSERT: Final = (
    "INSERT INTO bench.counters AS c (stream_id, n) VALUES (%s, 1) "
    "ON CONFLICT (stream_id) DO UPDATE SET n = c.n + 1"
)


def count_events(batch: Batch[Any], conn: psycopg.Connection[Any]) -> None:
    """Upserts a counter per event of the batch, in the batch's transaction.

    Written as the projections how-to advises a handler that runs one statement per event:
    with `execute_many` (one pipeline, the statement parsed once), which costs about a
    third of the client CPU of psycopg's ``executemany``. The raw loop runs both ways (the
    ``catchup-raw-pipelined`` row is the like-for-like comparison of the engine's cost).
    """
    execute_many(conn, UPSERT, [(e.stream_id,) for e in batch.events])


# ---------------------------------------------------------------------------------------
# Settings and results.


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Holds the sizes of a run: full by default, smaller through the flags."""

    events: int
    big_events: int
    million: bool
    whole_table: bool
    rounds: int
    live_seconds: float
    live_rate: int
    append_rounds: int
    append_seconds: float
    lease_ttl: float
    eventsourcing: bool


FULL: Final = {
    "events": 100_000,
    "big_events": 1_000_000,
    "rounds": 3,
    "live_seconds": 10.0,
    "live_rate": 1000,
    # Rounds long against the polling side's 1 s interval: it handles the events of a
    # round's last second after the round, so in 2 s rounds up to half of its work fell
    # outside the measured window while the live side's all fell inside (see
    # docs/discussions/subscriptions.md, "What a live batch costs").
    "append_rounds": 5,
    "append_seconds": 8.0,
    "lease_ttl": 3.0,
}
QUICK: Final = {
    **FULL,
    "events": 10_000,
    "big_events": 100_000,
    "rounds": 1,
    "live_seconds": 3.0,
    "append_rounds": 3,
    "append_seconds": 1.0,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """Holds one row of the table: every round of eventkeeper and of its baseline."""

    key: str
    label: str
    unit: str
    ours: list[float]
    baseline: list[float] | None = None
    baseline_label: str = ""
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ours_median(self) -> float:
        """Returns eventkeeper's median."""
        return statistics.median(self.ours)

    @property
    def baseline_median(self) -> float | None:
        """Returns the baseline's median, if the row has a baseline."""
        return statistics.median(self.baseline) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        """Returns eventkeeper's median over the baseline's, if the row has a baseline."""
        base = self.baseline_median
        return None if base is None else self.ours_median / base

    def as_dict(self) -> dict[str, Any]:
        """Returns the result as JSON-ready data."""
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "baseline": self.baseline_label or None,
            "ours_rounds": self.ours,
            "baseline_rounds": self.baseline,
            "ours_median": self.ours_median,
            "baseline_median": self.baseline_median,
            "ratio": self.ratio,
            "notes": list(self.notes),
            **self.extra,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """States a bar on one row: its ratio at least, or its value below / at most a limit."""

    key: str
    label: str
    kind: str  # "ratio>=", "value<" or "worst<="
    limit: float

    def measure(self, result: Result) -> float:
        """Returns the figure of ``result`` the bar is about."""
        if self.kind == "ratio>=":
            assert result.ratio is not None
            return result.ratio
        if self.kind == "worst<=":
            return max(result.ours)
        return result.ours_median

    def passes(self, figure: float) -> bool:
        """Tells whether the figure reaches the bar."""
        if self.kind == "ratio>=":
            return figure >= self.limit
        if self.kind == "value<":
            return figure < self.limit
        return figure <= self.limit

    def describe(self) -> str:
        """Returns the bar as the table shows it."""
        return {"ratio>=": ">= ", "value<": "< ", "worst<=": "<= "}[self.kind] + f"{self.limit:g}"


Checked = tuple[Check, float, bool]


# ---------------------------------------------------------------------------------------
# Writer processes: fill tables, append as fast as they can, or at a fixed rate.


def _writer_main(pipe: Connection, index: int) -> None:
    """Serves one writer process: a store per database URL, one command at a time."""
    stores: dict[str, PostgresEventStore] = {}

    def store_for(url: str) -> PostgresEventStore:
        if url not in stores:
            stores[url] = PostgresEventStore(url, registry=REGISTRY, min_size=1, max_size=1)
            stores[url].open()
        return stores[url]

    try:
        while True:
            command, args = pipe.recv()
            if command == "stop":
                return
            try:
                if command == "forget":
                    with contextlib.suppress(Exception):
                        stores.pop(args["url"]).close()
                    result: Any = None
                else:
                    store = store_for(args.pop("url"))
                    result = WRITER_COMMANDS[command](store, index, **args)
                pipe.send(("ok", result))
            except Exception:
                pipe.send(("error", traceback.format_exc()))
    finally:
        for store in stores.values():
            with contextlib.suppress(Exception):
                store.close()


def _sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def _fill(store: PostgresEventStore, index: int, streams: list[tuple[str, int]]) -> int:
    """Appends each stream's events in one append (a batch of up to 100)."""
    for stream_id, size in streams:
        store.append(stream_id, deposits(stream_id, size), expected_version=NO_STREAM)
    return sum(size for _, size in streams)


def _burst(
    store: PostgresEventStore, index: int, tag: str, start_at: float, seconds: float
) -> tuple[int, float]:
    """Appends single events to new streams until ``seconds`` pass; returns count, end."""
    count = 0
    _sleep_until(start_at)
    deadline = start_at + seconds
    while time.time() < deadline:
        stream_id = f"{tag}-w{index}-{count}"
        store.append(stream_id, deposits(stream_id, 1), expected_version=NO_STREAM)
        count += 1
    return count, time.time()


def _paced(
    store: PostgresEventStore, index: int, tag: str, start_at: float, seconds: float, rate: float
) -> list[tuple[str, float, float]]:
    """Appends single events at ``rate`` per second; returns (event id, before, after)."""
    interval = 1.0 / rate
    first = start_at + index * interval / WRITERS
    records: list[tuple[str, float, float]] = []
    for n in range(int(seconds * rate)):
        _sleep_until(first + n * interval)
        stream_id = f"{tag}-w{index}-{n % LIVE_STREAMS_PER_WRITER}"
        event = deposits(stream_id, 1)
        before = time.time()
        result = store.append(stream_id, event)
        after = time.time()
        records.append((str(result.event_ids[0]), before, after))
    return records


WRITER_COMMANDS: Final[dict[str, Callable[..., Any]]] = {
    "fill": _fill,
    "burst": _burst,
    "paced": _paced,
}


class WriterPool:
    """Drives `WRITERS` writer processes (spawned, never threads) through pipes."""

    def __init__(self, count: int = WRITERS) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes: list[Any] = []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=_writer_main, args=(child, index), daemon=True)
            process.start()
            self._pipes.append(parent)
            self._processes.append(process)

    def __enter__(self) -> WriterPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops every writer process."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop", {}))
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()

    def _run(self, command: str, args_of: Callable[[int], dict[str, Any]]) -> list[Any]:
        for index, pipe in enumerate(self._pipes):
            pipe.send((command, args_of(index)))
        replies = [pipe.recv() for pipe in self._pipes]
        errors = [detail for status, detail in replies if status == "error"]
        if errors:
            raise RuntimeError(f"writer process failed ({command}):\n{errors[0]}")
        return [detail for _, detail in replies]

    def forget(self, url: str) -> None:
        """Closes the writers' connections to ``url`` (before its database is dropped)."""
        self._run("forget", lambda _: {"url": url})

    def fill(self, url: str, prefix: str, total: int) -> float:
        """Appends ``total`` events in streams of 100 from all writers; returns seconds."""
        streams = [(f"{prefix}-{n}", size) for n, size in enumerate(stream_sizes(total))]
        count = len(self._pipes)
        started = time.perf_counter()
        done = self._run("fill", lambda i: {"url": url, "streams": streams[i::count]})
        if sum(done) != total:
            raise RuntimeError(f"fill: appended {sum(done)} events, expected {total}")
        return time.perf_counter() - started

    def burst(self, url: str, tag: str, seconds: float) -> tuple[int, float]:
        """Appends single events from all writers for ``seconds``; returns events, seconds."""
        start_at = time.time() + 0.2
        args = {"url": url, "tag": tag, "start_at": start_at, "seconds": seconds}
        replies = self._run("burst", lambda _: dict(args))
        return sum(c for c, _ in replies), max(end for _, end in replies) - start_at

    def paced(
        self, url: str, tag: str, seconds: float, total_rate: float
    ) -> list[tuple[str, float, float]]:
        """Appends single events at ``total_rate`` per second in all; returns each append."""
        start_at = time.time() + 0.2
        rate = total_rate / len(self._pipes)
        args = {"url": url, "tag": tag, "start_at": start_at, "seconds": seconds, "rate": rate}
        replies = self._run("paced", lambda _: dict(args))
        return [record for reply in replies for record in reply]


# ---------------------------------------------------------------------------------------
# Catch-up: eventkeeper, raw psycopg, eventsourcing.


async def until_done(
    waiter: Coroutine[Any, Any, None], runner_task: asyncio.Task[None], what: str
) -> None:
    """Awaits ``waiter``; raises at once if the runner task ends first (it failed)."""
    wait_task = asyncio.ensure_future(waiter)
    done, _ = await asyncio.wait({wait_task, runner_task}, return_when=asyncio.FIRST_COMPLETED)
    if wait_task not in done:
        wait_task.cancel()
        runner_task.result()
        raise RuntimeError(f"{what}: the runner stopped before the wait ended")
    wait_task.result()


async def _catchup(url: str, name: str, total: int) -> float:
    sub = Subscription(name, count_events, batch_size=BATCH_SIZE, shards=1)
    runner = SubscriptionRunner([sub], registry=REGISTRY, url=url, lease_ttl=CATCHUP_LEASE_TTL)
    stop = asyncio.Event()
    async with AsyncSubscriptionStore(url, registry=REGISTRY, max_size=2) as store:
        started = time.perf_counter()
        task = asyncio.create_task(runner.run(stop))
        try:
            waiter = store.wait_until_caught_up(name, timeout=catchup_timeout(total))
            await until_done(waiter, task, f"catch-up {name}")
            elapsed = time.perf_counter() - started
        finally:
            stop.set()
            await task
    return elapsed


async def wait_held(
    runner: SubscriptionRunner, task: asyncio.Task[None], sub: Subscription
) -> None:
    """Waits until ``runner`` holds every shard of ``sub``; raises if its task ends first."""
    deadline = time.monotonic() + 30
    while len(runner.held_shards.get(sub.name, [])) < sub.shards:
        if task.done() or time.monotonic() > deadline:
            task.result()
            raise RuntimeError(f"{sub.name}: the runner did not take its shards")
        await asyncio.sleep(POLL)


def catchup_timeout(total: int) -> float:
    """Returns how long a catch-up may take before the run gives up (at 100 events/s)."""
    return 60.0 + total / 100


def eventkeeper_catchup(url: str, name: str, total: int, streams: int) -> float:
    """Catches a new subscription up with the log; returns events per second."""
    reset_counters(url)
    elapsed = asyncio.run(_catchup(url, name, total))
    check_counters(url, f"eventkeeper {name}", total, streams)
    return total / elapsed


RAW_PAGE: Final = (
    "SELECT global_position, stream_id, version, event_id, event_type, schema_version, data, "
    "metadata, recorded_at, transaction_id::text::bigint FROM eventstore.events "
    "WHERE global_position > %s ORDER BY global_position LIMIT %s"
)
RAW_CHECKPOINT: Final = "UPDATE bench.raw_checkpoints SET position = %s WHERE name = %s"


def raw_catchup(url: str, name: str, total: int, streams: int, *, pipelined: bool = False) -> float:
    """Reads the log in keyset pages, upserting and checkpointing per page; events/s.

    The upserts go through psycopg's ``executemany``, or with ``pipelined`` through
    `execute_many`, as the eventkeeper side's handler does.
    """
    reset_counters(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO bench.raw_checkpoints VALUES (%s, 0)", (name,))
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        position = 0
        while True:
            with conn.transaction(), conn.cursor() as cur:
                rows = cur.execute(RAW_PAGE, (position, BATCH_SIZE)).fetchall()
                if rows and pipelined:
                    execute_many(conn, UPSERT, [(row[1],) for row in rows])
                    position = rows[-1][0]
                    cur.execute(RAW_CHECKPOINT, (position, name))
                elif rows:
                    cur.executemany(UPSERT, [(row[1],) for row in rows])
                    position = rows[-1][0]
                    cur.execute(RAW_CHECKPOINT, (position, name))
            if len(rows) < BATCH_SIZE:
                break
    elapsed = time.perf_counter() - started
    check_counters(url, f"raw {name}", total, streams)
    return total / elapsed


def reset_counters(url: str) -> None:
    """Empties the counter table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE bench.counters")


def check_counters(url: str, label: str, total: int, streams: int) -> None:
    """Raises unless the counters add up to exactly ``total`` events in ``streams`` rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), coalesce(sum(n), 0) FROM bench.counters").fetchone()
    assert row is not None
    if (int(row[0]), int(row[1])) != (streams, total):
        raise RuntimeError(
            f"{label}: counters hold {row[1]} events in {row[0]} streams; "
            f"expected {total} in {streams}"
        )


if ES_MISSING is None:

    class ESAccount(ESAggregate):
        """Holds an account the `eventsourcing` way: an opening, then deposits."""

        @event("Opened")
        def __init__(self, account_id: str) -> None:
            self.account_id = account_id

        @event("Deposited")
        def deposit(self, account_id: str, amount: int, currency: str, note: str) -> None:
            """Records a deposit (the projection only counts it)."""

    class Ledger(Application[UUID]):
        """Stores the accounts whose events the projection reads."""

        name = "BenchLedger"

    class StreamCountersView(PostgresTrackingRecorder):
        """Counts events per aggregate in Postgres, with the tracking row in the same
        transaction: the eventsourcing documentation's counters view, per aggregate."""

        def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
            super().__init__(datastore, **kwargs)
            self.counters_table = self.tracking_table_name.replace("_tracking", "")
            table = f'"{self.datastore.schema}"."{self.counters_table}"'
            self.sql_create_statements.append(
                sql.SQL(
                    f"CREATE TABLE IF NOT EXISTS {table} "
                    "(stream_id text PRIMARY KEY, n bigint NOT NULL)"
                )
            )
            self.upsert = sql.SQL(
                f"INSERT INTO {table} AS c (stream_id, n) VALUES (%s, 1) "
                "ON CONFLICT (stream_id) DO UPDATE SET n = c.n + 1"
            )
            self.totals_query = sql.SQL(
                f"SELECT count(*) AS streams, coalesce(sum(n), 0) AS events FROM {table}"
            )

        def incr(self, stream_id: str, tracking: Tracking) -> None:
            """Counts one event and records its tracking, in one transaction."""
            with self.datastore.transaction(commit=True) as curs:
                self._insert_tracking(curs, tracking)
                curs.execute(self.upsert, (stream_id,), prepare=True)

        def totals(self) -> tuple[int, int]:
            """Returns how many aggregates and events the view counted."""
            with self.datastore.transaction(commit=False) as curs:
                curs.execute(self.totals_query)
                row = curs.fetchone()
            assert row is not None
            return int(row["streams"]), int(row["events"])

    class StreamCounters(Projection[StreamCountersView]):
        """Counts every event of the ledger per aggregate."""

        name = "streamcounters"

        def process_event(self, domain_event: Any, tracking: Tracking) -> None:
            """Counts the event."""
            self.view.incr(str(domain_event.originator_id), tracking)


def ledger_env(url: str) -> dict[str, str]:
    """Returns `eventsourcing`'s settings for its Postgres persistence in ``url``'s database."""
    info = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info["dbname"]),
        "POSTGRES_HOST": str(info.get("host", "")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
    }


def fill_ledger(env: dict[str, str], total: int) -> tuple[int, float]:
    """Saves the accounts (100 events each, one transaction per account); returns the last
    notification id and the seconds it took."""
    started = time.perf_counter()
    app = Ledger(env=env)
    try:
        for n, size in enumerate(stream_sizes(total)):
            account = ESAccount(f"acct-{n}")
            for amount in range(size - 1):
                account.deposit(f"acct-{n}", 100 + amount, "EUR", "salary, March")
            app.save(account)
        last = app.recorder.max_notification_id()
    finally:
        app.close()
    if last is None:
        raise RuntimeError("eventsourcing: no events were recorded")
    return last, time.perf_counter() - started


def eventsourcing_catchup(env: dict[str, str], round_: int, last: int, total: int) -> float:
    """Runs a new projection over the ledger until it tracked the last event; events/s."""
    name = f"streamcounters{round_}"
    projection = type(f"StreamCounters{round_}", (StreamCounters,), {"name": name})
    streams = len(stream_sizes(total))
    started = time.perf_counter()
    runner = ProjectionRunner(
        application_class=Ledger,
        projection_class=projection,
        view_class=StreamCountersView,
        env=env,
    )
    try:
        with runner:
            deadline = time.monotonic() + catchup_timeout(total)
            while True:
                if runner.is_interrupted.is_set():
                    runner.run_forever(timeout=0)
                    raise RuntimeError("eventsourcing: the projection runner stopped")
                tracked = runner.view.max_tracking_id(Ledger.name)
                if tracked is not None and tracked >= last:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"eventsourcing: tracked {tracked} of {last} in time")
                time.sleep(POLL)
            elapsed = time.perf_counter() - started
            counted = runner.view.totals()
    finally:
        runner.view.datastore.close()
    if counted != (streams, total):
        raise RuntimeError(f"eventsourcing: view counted {counted}, expected {(streams, total)}")
    return total / elapsed


def prepare_events_db(url: str, pool: WriterPool, prefix: str, total: int) -> float:
    """Migrates a scratch database, adds the read model and appends ``total`` events."""
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(COUNTERS_DDL)
    return pool.fill(url, prefix, total)


def analyze(url: str) -> None:
    """Vacuums and analyzes the events table, as autovacuum would have by then."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) eventstore.events")


def prepare_big_db(url: str, pool: WriterPool, settings: Settings) -> tuple[list[str], float]:
    """Fills a table up to ``big_events`` so that the newest ``events`` come last.

    Every round's subscription is created at the end of the older events (``start="end"``)
    before the newest are appended, so each round reads exactly the newest ``events``.
    Returns the round subscriptions' names and the seconds the setup took.
    """
    started = time.perf_counter()
    older = settings.big_events - settings.events
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(COUNTERS_DDL)
    pool.fill(url, "old", older)
    names = [f"scaling-{n}" for n in range(settings.rounds)]
    with SubscriptionStore(url, registry=REGISTRY, max_size=1) as store:
        for name in names:
            store.ensure_checkpoints(name, 1, start_at_end=True)
    pool.fill(url, "acct", settings.events)
    analyze(url)
    return names, time.perf_counter() - started


def commit_latency(url: str, commits: int = 200) -> float:
    """Returns the median seconds of a transaction of one counter upsert, commit included:
    the floor of anything that commits once per event on this server."""
    times = []
    with psycopg.connect(url, autocommit=True) as conn:
        for n in range(commits):
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(UPSERT, (f"probe-{n % 10}",))
            times.append(time.perf_counter() - started)
        conn.execute("DELETE FROM bench.counters WHERE stream_id LIKE 'probe-%'")
    return statistics.median(times)


def big_catchup(
    big: tuple[str, list[str]], n: int, total: int, streams: int, ours_url: str, settings: Settings
) -> float:
    """Runs round ``n`` of eventkeeper's catch-up of the newest events of the big table."""
    progress(f"catch-up round {n + 1}/{settings.rounds}: eventkeeper, big table")
    big_url, names = big
    settle(ours_url)
    return eventkeeper_catchup(big_url, names[n], total, streams)


def measure_catchup(
    ours_url: str,
    big: tuple[str, list[str]] | None,
    ledger: tuple[dict[str, str], int] | None,
    settings: Settings,
) -> list[Result]:
    """Runs the catch-up rounds of every side, alternating: eventkeeper on the small and
    the big table (in turn first), raw, eventsourcing; then, once, eventkeeper over the
    whole big table."""
    total = settings.events
    streams = len(stream_sizes(total))
    ours: list[float] = []
    raw: list[float] = []
    raw_pipelined: list[float] = []
    theirs: list[float] = []
    scaled: list[float] = []
    for n in range(settings.rounds):
        # The big table's round runs next to eventkeeper's on the small one, first in odd
        # rounds: whichever follows eventsourcing's 100,000 commits (the round before's)
        # starts with its pages pushed out of shared buffers, so neither side always does.
        if big is not None and n % 2:
            scaled.append(big_catchup(big, n, total, streams, ours_url, settings))
        progress(f"catch-up round {n + 1}/{settings.rounds}: eventkeeper")
        settle(ours_url)
        ours.append(eventkeeper_catchup(ours_url, f"catchup-{n}", total, streams))
        if big is not None and not n % 2:
            scaled.append(big_catchup(big, n, total, streams, ours_url, settings))
        progress(f"catch-up round {n + 1}/{settings.rounds}: raw psycopg")
        settle(ours_url)
        raw.append(raw_catchup(ours_url, f"raw-{n}", total, streams))
        progress(f"catch-up round {n + 1}/{settings.rounds}: raw psycopg, execute_many")
        settle(ours_url)
        raw_pipelined.append(
            raw_catchup(ours_url, f"raw-pipelined-{n}", total, streams, pipelined=True)
        )
        if ledger is not None:
            progress(f"catch-up round {n + 1}/{settings.rounds}: eventsourcing")
            env, last = ledger
            settle(ours_url)
            theirs.append(eventsourcing_catchup(env, n, last, total))
    label = f"catch-up {total:,} events, 1 shard, batch {BATCH_SIZE:,}"
    seconds = ", ".join(f"{total / rate:.2f} s" for rate in ours)
    results = [
        Result(
            "catchup-raw",
            label,
            "ev/s",
            ours,
            raw,
            "raw psycopg keyset loop",
            notes=(f"catch-up of {total:,}: eventkeeper rounds took {seconds}",),
        ),
        Result(
            "catchup-raw-pipelined",
            label,
            "ev/s",
            ours,
            raw_pipelined,
            "raw loop, upserts by execute_many",
            notes=(
                "no bar: the raw loop with the handler's own way of writing (execute_many), "
                "so the ratio is what the engine itself costs",
            ),
        ),
    ]
    if ledger is not None:
        commit = commit_latency(ours_url)
        per_event = 1000 / statistics.median(theirs)
        results.append(
            Result(
                "catchup-eventsourcing",
                label,
                "ev/s",
                ours,
                theirs,
                "eventsourcing ProjectionRunner",
                notes=(
                    f"eventsourcing commits the view and its tracking once per event: "
                    f"{per_event:.2f} ms per event; a one-upsert transaction takes "
                    f"{1000 * commit:.2f} ms (median) on this server",
                ),
                extra={"commit_latency_ms": 1000 * commit},
            )
        )
    if big is not None:
        big_url, _ = big
        results.append(
            Result(
                "catchup-scaling",
                f"catch-up newest {total:,} of {settings.big_events:,}",
                "ev/s",
                scaled,
                ours,
                f"same, table of {total:,}",
            )
        )
        if settings.whole_table:
            progress(f"catch-up of the whole table of {settings.big_events:,} (one round)")
            older = settings.big_events - total
            every = len(stream_sizes(older)) + streams
            whole = eventkeeper_catchup(big_url, "whole-0", settings.big_events, every)
            results.append(
                Result(
                    "catchup-whole-table",
                    f"catch-up all {settings.big_events:,} from the start (1 round)",
                    "ev/s",
                    [whole],
                    ours,
                    f"all {total:,} of the small table",
                    notes=(
                        f"catch-up of all {settings.big_events:,}: "
                        f"{settings.big_events / whole:.1f} s (no bar: shows whether a "
                        "window costs more as the table grows)",
                    ),
                )
            )
    return results


# ---------------------------------------------------------------------------------------
# Live latency: commit to handler.


def percentile(values: Sequence[float], fraction: float) -> float:
    """Returns the value below which ``fraction`` of the values lie (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered)) - 1))
    return ordered[rank]


# The two sides of the latency scenario: the default runner, whose watcher asks for the
# current snapshot every 50 ms, and a runner whose only wake-up is its 0.5 s poll.
LIVE_MODES: Final[dict[str, dict[str, Any]]] = {
    "watch": {},
    "poll": {"poll_interval": 0.5, "wake_interval": 0.5},
}
LIVE_LABELS: Final = {"watch": "snapshot watch (default)", "poll": "polling only"}


async def _live_round(
    url: str, pool: WriterPool, name: str, mode: str, settings: Settings
) -> tuple[list[float], list[float], float]:
    handled: dict[str, float] = {}

    def handler(batch: Batch[Any], conn: psycopg.Connection[Any]) -> None:
        now = time.time()
        for recorded in batch.events:
            handled.setdefault(str(recorded.event_id), now)
        count_events(batch, conn)

    sub = Subscription(name, handler, batch_size=BATCH_SIZE, start="end")
    runner = SubscriptionRunner(
        [sub], registry=REGISTRY, url=url, lease_ttl=CATCHUP_LEASE_TTL, **LIVE_MODES[mode]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_held(runner, task, sub)
        await asyncio.sleep(0.5)  # let the worker's first cycles and the watcher settle
        records = await asyncio.to_thread(
            pool.paced, url, name, settings.live_seconds, settings.live_rate
        )
        async with AsyncSubscriptionStore(url, registry=REGISTRY, max_size=2) as store:
            await until_done(store.wait_until_caught_up(name, timeout=60), task, name)
    finally:
        stop.set()
        await task
    missing = [event_id for event_id, _, _ in records if event_id not in handled]
    if missing:
        raise RuntimeError(f"{name}: {len(missing)} appended events were never handled")
    latencies = [handled[event_id] - after for event_id, _, after in records]
    appends = [after - before for _, before, after in records]
    span = max(after for _, _, after in records) - min(before for _, before, _ in records)
    return latencies, appends, len(records) / span


def measure_latency(url: str, pool: WriterPool, settings: Settings) -> list[Result]:
    """Measures commit-to-handler latency with the snapshot watch and polling only,
    alternating."""
    samples: dict[str, list[float]] = {mode: [] for mode in LIVE_MODES}
    per_round: dict[str, list[dict[str, float]]] = {mode: [] for mode in LIVE_MODES}
    appends: list[float] = []
    achieved: list[float] = []
    for n in range(settings.rounds):
        for mode in LIVE_MODES:
            progress(f"live latency round {n + 1}/{settings.rounds}: {LIVE_LABELS[mode]}")
            latencies, append_times, rate = asyncio.run(
                _live_round(url, pool, f"live-{mode}-{n}", mode, settings)
            )
            samples[mode].extend(latencies)
            appends.extend(append_times)
            achieved.append(rate)
            per_round[mode].append(
                {
                    "p50_ms": 1000 * percentile(latencies, 0.5),
                    "p99_ms": 1000 * percentile(latencies, 0.99),
                }
            )
    load = f"{WRITERS} writers, {settings.live_rate:,} ev/s"
    append_note = (
        f"live latency: measured from each writer's return from its append (commit "
        f"acknowledged); appends took p50 {1000 * percentile(appends, 0.5):.1f} ms, "
        f"p99 {1000 * percentile(appends, 0.99):.1f} ms; the writers reached "
        f"{min(achieved):,.0f}-{max(achieved):,.0f} ev/s"
    )
    results = []
    for mode, settings_of in LIVE_MODES.items():
        values = samples[mode]
        extra = {
            "samples": len(values),
            "min_ms": 1000 * min(values),
            "max_ms": 1000 * max(values),
            "achieved_rates": achieved,
            "rounds": per_round[mode],
            "runner_settings": settings_of,
        }
        for fraction in (0.5, 0.99):
            key = f"latency-{mode}-p{round(fraction * 100)}"
            label = f"commit->handler p{round(fraction * 100)}, {LIVE_LABELS[mode]}, {load}"
            results.append(
                Result(
                    key,
                    label,
                    "ms",
                    [1000 * percentile(values, fraction)],
                    extra=extra,
                    notes=(append_note,) if key == "latency-watch-p50" else (),
                )
            )
    return results


# ---------------------------------------------------------------------------------------
# Appends while a runner handles them, with its wake-ups (the 50 ms snapshot watch) on and
# off (polling only): the cost of the wake-up mechanism on the append path.


def reset_events(url: str) -> None:
    """Empties the store's tables, so that every round appends to the same empty table."""
    with psycopg.connect(url) as conn:  # one transaction: events are append-only otherwise
        conn.execute("SET LOCAL eventstore.allow_rewrite = 'on'")
        conn.execute("TRUNCATE eventstore.events, eventstore.streams RESTART IDENTITY")


def count_events_table(url: str) -> int:
    """Returns the number of stored events."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM eventstore.events").fetchone()
    return int(row[0]) if row else 0


async def _burst_with_runner(
    url: str, pool: WriterPool, name: str, seconds: float, wakeups: bool
) -> tuple[int, float, int, float]:
    """Starts a runner (wake-ups on: defaults; off: polling once a second) with a trivial
    subscription, waits until it holds its shard
    and is caught up, then lets the writers append for ``seconds`` while it handles the
    events; returns the events, the seconds of the appends, the batches handled and the CPU
    seconds this process (the runner) used during the appends."""
    handled = [0, 0]  # events, batches

    async def count(batch: Batch[Any], conn: Any) -> None:
        handled[0] += len(batch)
        handled[1] += 1

    sub = Subscription(name, count, start="end")
    timing = {} if wakeups else {"wake_interval": 1.0, "poll_interval": 1.0}
    runner = SubscriptionRunner([sub], registry=REGISTRY, url=url, **timing)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        async with AsyncSubscriptionStore(url, registry=REGISTRY, max_size=2) as store:
            await wait_held(runner, task, sub)
            await until_done(store.wait_until_caught_up(name, timeout=30), task, name)
            cpu = time.process_time()
            events, elapsed = await asyncio.to_thread(pool.burst, url, name, seconds)
            cpu = time.process_time() - cpu
            await until_done(store.wait_until_caught_up(name, timeout=60), task, name)
    finally:
        stop.set()
        await task
    if handled[0] != events:
        raise RuntimeError(f"append: the runner handled {handled[0]} of {events} events")
    return events, elapsed, handled[1], cpu


def append_round(
    url: str, pool: WriterPool, tag: str, seconds: float, wakeups: bool
) -> tuple[int, float, int, float]:
    """Runs one round of appends on an empty table; returns the events, the seconds, and
    the batches the runner handled and its CPU seconds."""
    reset_events(url)
    settle(url)
    events, elapsed, batches, cpu = asyncio.run(
        _burst_with_runner(url, pool, tag, seconds, wakeups)
    )
    stored = count_events_table(url)
    if stored != events:
        raise RuntimeError(f"append: counted {events} events, {stored} stored")
    return events, elapsed, batches, cpu


def measure_append(url: str, pool: WriterPool, settings: Settings) -> Result:
    """Appends single events from the writer processes while a caught-up runner handles
    them, its wake-ups on and off, alternating."""
    upgrade(url)
    rates: dict[bool, list[float]] = {True: [], False: []}
    handled = [0, 0]  # events, batches of the runner's rounds
    cpu_share: list[float] = []  # CPU seconds of the runner's process per second of appends
    warm_up = min(0.5, settings.append_seconds)
    for wakeups in (True, False):
        append_round(url, pool, f"warm-{wakeups}", warm_up, wakeups)
    for n in range(settings.append_rounds):
        # ABBA: the side that goes first changes every round, so that a drift over the run
        # (the server settling, a neighbour's load) favours neither.
        for wakeups in (True, False) if n % 2 == 0 else (False, True):
            side = "wake-ups on" if wakeups else "polling only"
            progress(f"append round {n + 1}/{settings.append_rounds}: {side}")
            tag = f"append-{n}-{'wake' if wakeups else 'poll'}"
            events, elapsed, batches, cpu = append_round(
                url, pool, tag, settings.append_seconds, wakeups
            )
            rates[wakeups].append(events / elapsed)
            if wakeups:
                handled[0] += events
                handled[1] += batches
                cpu_share.append(cpu / elapsed)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    note = (
        f"append: wake-ups on {on:,.0f} ev/s, polling only {off:,.0f} ev/s; the runner "
        f"handled all {handled[0]:,} events of its rounds in {handled[1]:,} batches "
        f"({handled[0] / max(handled[1], 1):,.1f} events each), using "
        f"{100 * statistics.median(cpu_share):.0f}% of a CPU in this process (median) on a "
        f"{os.cpu_count()}-CPU machine"
    )
    return Result(
        "append-wakeups",
        f"append 1 evt/txn, {WRITERS} writer processes, wake-ups on",
        "ev/s",
        rates[True],
        rates[False],
        "same, runner polling only",
        notes=(note,),
        extra={"runner_cpu_share": cpu_share, "runner_batches": handled[1]},
    )


# ---------------------------------------------------------------------------------------
# Takeover after a runner is killed.


def _runner_main(url: str, name: str, runner_id: str, ttl: float) -> None:
    """Runs one subscription runner until SIGTERM (graceful) or SIGKILL."""
    logging.getLogger("eventstore.subscriptions").setLevel(logging.ERROR)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        sub = Subscription(name, count_events, shards=TAKEOVER_SHARDS, start="end")
        runner = SubscriptionRunner(
            [sub], registry=REGISTRY, url=url, runner_id=runner_id, lease_ttl=ttl
        )
        await runner.run(stop)

    asyncio.run(run())


OWNERS: Final = (
    "SELECT shard, CASE WHEN lease_until > now() THEN owner END FROM eventstore.checkpoints "
    "WHERE name = %s ORDER BY shard"
)


def owners(conn: psycopg.Connection[Any], name: str) -> list[str | None]:
    """Returns each shard's owner, None where nobody holds a live lease."""
    return [owner for _, owner in conn.execute(OWNERS, (name,)).fetchall()]


def wait_owners(
    conn: psycopg.Connection[Any], name: str, ok: Callable[[list[str | None]], bool], what: str
) -> float:
    """Polls the checkpoints until ``ok(owners)``; returns the time it happened."""
    deadline = time.monotonic() + 60
    while True:
        found = owners(conn, name)
        if found and ok(found):
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise RuntimeError(f"takeover: waited in vain for {what}; owners {found}")
        time.sleep(POLL)


def takeover_round(url: str, name: str, ttl: float, delay: float) -> float:
    """Kills the runner holding half the shards ``delay`` seconds after they were shared;
    returns the seconds until the other runner holds them all."""
    context = multiprocessing.get_context("spawn")
    first, second = f"{name}-killed", f"{name}-survivor"
    victim = context.Process(target=_runner_main, args=(url, name, first, ttl), daemon=True)
    survivor = context.Process(target=_runner_main, args=(url, name, second, ttl), daemon=True)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            victim.start()
            wait_owners(conn, name, lambda o: o.count(first) == TAKEOVER_SHARDS, "all to one")
            survivor.start()
            half = TAKEOVER_SHARDS // 2
            wait_owners(
                conn,
                name,
                lambda o: o.count(first) == half and o.count(second) == TAKEOVER_SHARDS - half,
                "the shards to be shared",
            )
            time.sleep(delay)
            killed = time.perf_counter()
            os.kill(victim.pid, signal.SIGKILL)
            held = wait_owners(
                conn, name, lambda o: o.count(second) == TAKEOVER_SHARDS, "the survivor"
            )
        check_survivor(url, name)
        return held - killed
    finally:
        for process in (victim, survivor):
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
                process.join(timeout=15)
                if process.is_alive():
                    process.kill()


def check_survivor(url: str, name: str) -> None:
    """Appends to streams of every shard and waits for the survivor to handle them."""
    with PostgresEventStore(url, registry=REGISTRY, min_size=1, max_size=1) as store:
        for n in range(4 * TAKEOVER_SHARDS):
            store.append(f"{name}-check-{n}", deposits(f"{name}-check-{n}", 1))
    with SubscriptionStore(url, registry=REGISTRY, max_size=1) as subs:
        subs.wait_until_caught_up(name, timeout=30)


def measure_takeover(url: str, settings: Settings) -> Result:
    """Measures takeovers after SIGKILL in rounds; the bar is on the worst round.

    The kill comes a random 0.5-1.5 s after the shards were shared (fixed seed), so the
    rounds meet the runners' 1 s membership cycles at different phases.
    """
    rng = random.Random(20261201)
    times = []
    for n in range(settings.rounds):
        progress(f"takeover round {n + 1}/{settings.rounds}")
        delay = 0.5 + rng.random()
        times.append(takeover_round(url, f"takeover-{n}", settings.lease_ttl, delay))
    return Result(
        "takeover",
        f"takeover after SIGKILL, {TAKEOVER_SHARDS} shards, lease_ttl {settings.lease_ttl:g} s",
        "s",
        times,
        notes=(
            f"takeover: median {statistics.median(times):.2f} s, worst {max(times):.2f} s; "
            f"rounds {', '.join(f'{t:.2f}' for t in times)} s",
        ),
    )


# ---------------------------------------------------------------------------------------
# The run.


def checks(settings: Settings) -> list[Check]:
    """Returns the bars of the issue."""
    return [
        Check("catchup-raw", "catch-up vs raw psycopg", "ratio>=", 0.35),
        Check("catchup-eventsourcing", "catch-up vs eventsourcing", "ratio>=", 25.0),
        Check("catchup-scaling", "catch-up rate, big table vs small", "ratio>=", 0.8),
        Check("latency-watch-p99", "p99 commit->handler, snapshot watch (ms)", "value<", 100.0),
        Check("latency-poll-p99", "p99 commit->handler, polling only (ms)", "value<", 1000.0),
        Check("append-wakeups", "append, wake-ups enabled vs disabled", "ratio>=", 0.95),
        Check(
            "takeover", "takeover after SIGKILL, worst round (s)", "worst<=", settings.lease_ttl + 1
        ),
    ]


def run_all(url: str, settings: Settings) -> tuple[list[Result], str, dict[str, float]]:
    """Creates the scratch databases, measures every scenario and drops them again."""
    setup: dict[str, float] = {}
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        ours_url = stack.enter_context(scratch_database(url))
        big_url = stack.enter_context(scratch_database(url)) if settings.million else None
        ledger_url = stack.enter_context(scratch_database(url)) if settings.eventsourcing else None
        writes_url = stack.enter_context(scratch_database(url))
        pool = stack.enter_context(WriterPool())
        for scratch in (ours_url, big_url, writes_url):
            if scratch is not None:
                stack.callback(pool.forget, scratch)
        with psycopg.connect(ours_url) as conn:
            server = server_version(conn)

        progress(f"setup: appending {settings.events:,} events")
        setup["events_s"] = prepare_events_db(ours_url, pool, "acct", settings.events)
        analyze(ours_url)
        big = None
        if big_url is not None:
            progress(f"setup: a table of {settings.big_events:,} events")
            names, setup["big_table_s"] = prepare_big_db(big_url, pool, settings)
            big = (big_url, names)
        ledger = None
        if ledger_url is not None:
            progress(f"setup: saving {settings.events:,} events with eventsourcing")
            env = ledger_env(ledger_url)
            last, setup["eventsourcing_events_s"] = fill_ledger(env, settings.events)
            ledger = (env, last)
        results.extend(measure_catchup(ours_url, big, ledger, settings))
        results.extend(measure_latency(ours_url, pool, settings))
        results.append(measure_append(writes_url, pool, settings))
        results.append(measure_takeover(ours_url, settings))
    return results, server, setup


def fmt(value: float | None, unit: str) -> str:
    """Formats a figure for the table."""
    if value is None:
        return "-"
    if unit in ("ms", "s"):
        return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
    return f"{value:,.0f}"


def format_table(results: Sequence[Result], checked: Sequence[Checked]) -> str:
    """Returns the results as a text table, followed by each scenario's notes."""
    bars = {check.key: check.describe() for check, _, _ in checked}
    width = max(len(r.label) for r in results)
    header = (
        f"{'scenario':<{width}}  {'unit':<5}  {'eventkeeper':>11}  {'baseline':>10}  "
        f"{'ratio':>7}  {'bar':>8}  baseline is"
    )
    rows = [
        f"{r.label:<{width}}  {r.unit:<5}  {fmt(r.ours_median, r.unit):>11}  "
        f"{fmt(r.baseline_median, r.unit):>10}  "
        f"{'-' if r.ratio is None else f'{r.ratio:.2f}':>7}  {bars.get(r.key, ''):>8}  "
        f"{r.baseline_label or '-'}"
        for r in results
    ]
    lines = [header, "-" * max(len(line) for line in [header, *rows]), *rows, ""]
    lines.extend(note for r in results for note in r.notes)
    return "\n".join(lines)


def check_all(results: Sequence[Result], settings: Settings) -> list[Checked]:
    """Checks every bar whose scenario ran."""
    by_key = {r.key: r for r in results}
    checked = []
    for check in checks(settings):
        if check.key in by_key:
            figure = check.measure(by_key[check.key])
            checked.append((check, figure, check.passes(figure)))
    return checked


def format_checks(checked: Sequence[Checked], settings: Settings) -> str:
    """Returns one PASS/FAIL line per bar, and a SKIP line for each scenario not run."""
    lines = [
        f"{'PASS' if ok else 'FAIL'}  {check.label}: {figure:,.2f} (bar {check.describe()})"
        for check, figure, ok in checked
    ]
    ran = {check.key for check, _, _ in checked}
    lines.extend(
        f"SKIP  {check.label}: not measured in this run"
        for check in checks(settings)
        if check.key not in ran
    )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Settings]:
    """Parses the flags; sizes default to the full run, ``--quick`` to a small one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--url",
        default=os.environ.get("EVENTSTORE_DATABASE_URL") or DEFAULT_URL,
        help="admin URL of the server; scratch databases are created and dropped there",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--events", type=int, help="events to catch up with (100,000)")
    parser.add_argument("--big-events", type=int, help="events in the big table (1,000,000)")
    parser.add_argument("--skip-million", action="store_true", help="skip the big-table scenarios")
    parser.add_argument(
        "--skip-whole-table",
        action="store_true",
        help="skip the one catch-up of the whole big table from its start",
    )
    parser.add_argument("--rounds", type=int, help="rounds per side (3)")
    parser.add_argument("--live-seconds", type=float, help="seconds of live appends (10)")
    parser.add_argument("--live-rate", type=int, help="live appends per second, all (1,000)")
    parser.add_argument("--append-rounds", type=int, help="append rounds per side (7)")
    parser.add_argument("--append-seconds", type=float, help="seconds per append round (2)")
    parser.add_argument("--lease-ttl", type=float, help="lease TTL in the takeover (3)")
    parser.add_argument(
        "--skip-eventsourcing",
        action="store_true",
        help="skip the comparison with eventsourcing (runs without it installed)",
    )
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    sizes = {
        key: getattr(args, key) if getattr(args, key) is not None else value
        for key, value in profile.items()
    }
    if sizes["events"] < 1 or sizes["rounds"] < 1:
        parser.error("--events and --rounds must be positive")
    million = not args.skip_million
    if million and sizes["big_events"] <= sizes["events"]:
        parser.error("--big-events must exceed --events")
    settings = Settings(
        **sizes,
        million=million,
        whole_table=million and not args.skip_whole_table,
        eventsourcing=not args.skip_eventsourcing,
    )
    return args, settings


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints the table; returns 1 when a bar fails."""
    args, settings = parse_args(argv)
    if settings.eventsourcing and ES_MISSING is not None:
        print(
            f"benchmarks/subscriptions.py compares against the `eventsourcing` package: "
            f"{ES_MISSING}.\nInstall it in a separate environment, never as a project "
            "dependency:\n\n"
            "    python3 -m venv .venv-bench\n"
            "    .venv-bench/bin/pip install -e . -r benchmarks/requirements-aggregates.txt\n"
            "    .venv-bench/bin/python benchmarks/subscriptions.py\n\n"
            "or run without that comparison: --skip-eventsourcing",
            file=sys.stderr,
        )
        return 2
    contender = importlib.metadata.version("eventsourcing") if settings.eventsourcing else None
    logging.getLogger("eventstore.subscriptions").setLevel(logging.ERROR)
    # The daemons run here as the CLI runs them, with its garbage collector settings; every
    # side of the comparison shares this process, and so those settings.
    tune_gc()
    started = time.perf_counter()
    results, server, setup = run_all(admin_url(args.url), settings)
    elapsed = time.perf_counter() - started
    checked = check_all(results, settings)
    setup_text = ", ".join(f"{key} {value:.1f} s" for key, value in setup.items())
    print(
        f"Postgres {server}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"eventsourcing {contender or 'not run'}; {plural(settings.rounds, 'round')} per side "
        f"(alternating), medians; setup {setup_text}; ran {elapsed:.0f} s\n"
    )
    print(format_table(results, checked))
    print()
    print(format_checks(checked, settings))
    if args.json is not None:
        document = {
            "server_version": server,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "eventsourcing": contender,
            "settings": dataclasses.asdict(settings),
            "setup_s": setup,
            "elapsed_s": elapsed,
            "results": [r.as_dict() for r in results],
            "bars": [
                {
                    "key": check.key,
                    "label": check.label,
                    "kind": check.kind,
                    "limit": check.limit,
                    "measured": figure,
                    "ok": ok,
                }
                for check, figure, ok in checked
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return 0 if all(ok for _, _, ok in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
