"""Measures the event store's appends and loads against raw psycopg, writers as processes.

Run ``python benchmarks/append.py [--url URL] [--quick] [--json PATH]``. The script creates
a scratch database on the server behind ``--url`` (default: ``EVENTSTORE_DATABASE_URL``, else
a local server), migrates it and copies ``eventstore.events`` into ``raw.events`` with
``LIKE ... INCLUDING ALL``. Each writer is its own OS process with its own connections,
commanded by this process over a pipe. The single-event scenarios compare the store with
two raw baselines: ``raw``, one prepared one-row INSERT on an autocommit connection, and
``raw-txn``, the same INSERT inside BEGIN/COMMIT. The 100-event scenario compares it with
``executemany`` in a transaction, the load with a raw SELECT decoded to dicts. Sides run in
interleaved rounds; the output gives the conditions, median events per second, the ratios,
the client CPU per event of every side and the bars of the issue. The exit status is 1 when
a bar fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import resource
import statistics
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any, ClassVar, Final, Literal

import psycopg
from _common import (
    Bar,
    admin_url,
    check_bars,
    format_bars,
    parse_args,
    plural,
    progress,
    scratch_database,
    server_version,
    write_json,
)
from psycopg import sql

from eventstore import NO_STREAM, Event, EventRegistry, PostgresEventStore, uuid7

STORE_SCHEMA: Final = "eventstore"
RAW_SCHEMA: Final = "raw"
WRITER_COUNTS: Final = (1, 4, 16)
BATCH_WRITER_COUNTS: Final = (1, 4)
BATCH_SIZE: Final = 100
LOAD_SIZE: Final = 1000
LOAD_STREAM: Final = "load-0"
START_LEAD: Final = 0.1
"""Seconds between sending a round's start and its ``start_at``: time to deliver it."""
ANSWER_TIMEOUT: Final = 60.0
"""Seconds a worker may take to answer a command beyond the round's own duration."""

STORE: Final = "store"
RAW: Final = "raw"
RAW_TXN: Final = "raw-txn"
EXECUTEMANY: Final = "executemany"
SELECT: Final = "select"

Kind = Literal["new", "existing", "batch", "load"]


class Deposited(Event):
    """Records money paid into an account."""

    event_type: ClassVar[str] = "bench.Deposited"
    account_id: str
    amount: int
    currency: str
    note: str


REGISTRY: Final = EventRegistry([Deposited])

# Rendered to bytes once, as the store renders its statements: a `sql.Composed` would be
# rendered again on every execute, which would flatter the store.
RAW_INSERT: Final = (
    sql.SQL(
        "INSERT INTO {} (stream_id, version, event_id, event_type, schema_version, shard_key, "
        "data, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    )
    .format(sql.Identifier(RAW_SCHEMA, "events"))
    .as_bytes(None)
)

# The same columns the store reads; psycopg decodes both jsonb columns to dicts.
RAW_SELECT: Final = (
    sql.SQL(
        "SELECT global_position, stream_id, version, event_id, event_type, schema_version, data, "
        "metadata, recorded_at, transaction_id::text::bigint FROM {} WHERE stream_id = %s "
        "ORDER BY version"
    )
    .format(sql.Identifier(RAW_SCHEMA, "events"))
    .as_bytes(None)
)
RAW_DATA_COLUMN: Final = 6


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Holds how many timed rounds each side gets and how long rounds last, in seconds."""

    rounds: int
    duration: float
    warmup: float


FULL: Final = Settings(rounds=9, duration=1.0, warmup=0.5)
QUICK: Final = Settings(rounds=2, duration=0.3, warmup=0.15)


def make_events(stream_id: str, count: int) -> list[Deposited]:
    """Builds ``count`` realistic deposits for one account."""
    return [
        Deposited(account_id=stream_id, amount=100 + n, currency="EUR", note="salary, March")
        for n in range(count)
    ]


def raw_rows(stream_id: str, first_version: int, events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """Encodes events as raw insert parameters, with the payload JSON the store would write."""
    shard = zlib.crc32(stream_id.encode("utf-8")) & 0x7FFF_FFFF
    return [
        (
            stream_id,
            first_version + n,
            uuid7(),
            event.event_type,
            event.schema_version,
            shard,
            event.model_dump_json(),
            "{}",
        )
        for n, event in enumerate(events)
    ]


# ---------------------------------------------------------------------------------------
# The worker process: its connections and the operation of each side.

Operation = Callable[[], int]
"""Performs one append or load and returns the events it wrote or read."""


class Writer:
    """Owns one worker process's connections: a store pool of one, one connection per raw side.

    ``raw`` is a dedicated autocommit connection for the one-row INSERT; ``raw_txn`` is
    another autocommit connection whose statements run in explicit transactions
    (``raw-txn`` and ``executemany``).
    """

    def __init__(self, url: str, index: int) -> None:
        self.index = index
        self.store = PostgresEventStore(url, registry=REGISTRY, min_size=1, max_size=1)
        self.store.open()
        self.raw = psycopg.connect(url, autocommit=True)
        self.raw_txn = psycopg.connect(url, autocommit=True)
        self._operation: Operation | None = None

    def close(self) -> None:
        """Closes every connection of the process."""
        self.raw.close()
        self.raw_txn.close()
        self.store.close()

    def setup(self, kind: Kind, side: str, round_id: int) -> int:
        """Prepares a round's operation (and any stream it needs); returns events written."""
        prefix = f"{side}-r{round_id}-w{self.index}"
        self._operation, written = OPERATIONS[kind, side](self, prefix)
        return written

    def run(self, start_at: float, stop_at: float) -> dict[str, float]:
        """Runs the prepared operation from ``start_at`` until ``stop_at`` (monotonic clock).

        Returns the events done, when the timed part began and ended (monotonic clock), its
        seconds, how late it began and the process's user+sys CPU seconds over it.
        """
        operation = self._operation
        if operation is None:
            raise RuntimeError("run before setup")
        self._operation = None
        delay = start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        began = time.monotonic()
        cpu_before = process_cpu()
        events = 0
        while time.monotonic() < stop_at:
            events += operation()
        ended = time.monotonic()
        cpu = process_cpu() - cpu_before
        return {
            "events": events,
            "began": began,
            "ended": ended,
            "elapsed": ended - began,
            "late": max(0.0, began - start_at),
            "cpu": cpu,
        }


def process_cpu() -> float:
    """Returns the user+sys CPU seconds this process (every thread of it) has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def insert_autocommit(conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> None:
    """Executes the prepared one-row INSERT on its own: an autocommit transaction."""
    conn.execute(RAW_INSERT, row, prepare=True)


def insert_in_transaction(conn: psycopg.Connection[Any], row: tuple[Any, ...]) -> None:
    """Executes the prepared one-row INSERT between BEGIN and COMMIT."""
    with conn.transaction():
        conn.execute(RAW_INSERT, row, prepare=True)


Insert = Callable[[psycopg.Connection[Any], tuple[Any, ...]], None]
Factory = Callable[[Writer, str], tuple[Operation, int]]
"""Prepares a side's operation for a round from the writer and the round's stream prefix;
returns it with the events written while preparing."""


def store_new(batch: int) -> Factory:
    """Appends ``batch`` events to a new stream per operation, with `NO_STREAM`."""

    def factory(writer: Writer, prefix: str) -> tuple[Operation, int]:
        counter = itertools.count()

        def operation() -> int:
            stream_id = f"{prefix}-{next(counter)}"
            writer.store.append(
                stream_id, make_events(stream_id, batch), expected_version=NO_STREAM
            )
            return batch

        return operation, 0

    return factory


def store_existing(writer: Writer, prefix: str) -> tuple[Operation, int]:
    """Creates the writer's stream, then appends one event per operation at its version."""
    stream_id = f"{prefix}-0"
    first = writer.store.append(stream_id, make_events(stream_id, 1), expected_version=NO_STREAM)
    version = first.next_expected_version

    def operation() -> int:
        nonlocal version
        result = writer.store.append(stream_id, make_events(stream_id, 1), expected_version=version)
        version = result.next_expected_version
        return 1

    return operation, 1


def raw_new(insert: Insert, connection: Callable[[Writer], psycopg.Connection[Any]]) -> Factory:
    """Inserts one row of a new stream per operation."""

    def factory(writer: Writer, prefix: str) -> tuple[Operation, int]:
        conn = connection(writer)
        counter = itertools.count()

        def operation() -> int:
            stream_id = f"{prefix}-{next(counter)}"
            insert(conn, raw_rows(stream_id, 1, make_events(stream_id, 1))[0])
            return 1

        return operation, 0

    return factory


def raw_existing(
    insert: Insert, connection: Callable[[Writer], psycopg.Connection[Any]]
) -> Factory:
    """Inserts the writer's stream's first row, then one row of the next version per operation."""

    def factory(writer: Writer, prefix: str) -> tuple[Operation, int]:
        conn = connection(writer)
        stream_id = f"{prefix}-0"
        insert(conn, raw_rows(stream_id, 1, make_events(stream_id, 1))[0])
        version = 1

        def operation() -> int:
            nonlocal version
            insert(conn, raw_rows(stream_id, version + 1, make_events(stream_id, 1))[0])
            version += 1
            return 1

        return operation, 1

    return factory


def executemany_new(writer: Writer, prefix: str) -> tuple[Operation, int]:
    """Inserts `BATCH_SIZE` rows of a new stream per operation: executemany in a transaction."""
    conn = writer.raw_txn
    counter = itertools.count()

    def operation() -> int:
        stream_id = f"{prefix}-{next(counter)}"
        rows = raw_rows(stream_id, 1, make_events(stream_id, BATCH_SIZE))
        with conn.transaction():
            conn.cursor().executemany(RAW_INSERT, rows)
        return BATCH_SIZE

    return operation, 0


def loaded(count: int, side: str) -> int:
    """Returns ``count``; raises unless a load read the whole prepared stream."""
    if count != LOAD_SIZE:
        raise RuntimeError(f"{side}: loaded {count} events, expected {LOAD_SIZE}")
    return count


def store_load(writer: Writer, prefix: str) -> tuple[Operation, int]:
    """Checks that the store loads typed events, then loads the whole stream per operation."""
    events = list(writer.store.read_stream(LOAD_STREAM))
    if not all(isinstance(e.data, Deposited) for e in events):
        raise RuntimeError("the store did not load typed Deposited events")
    loaded(len(events), STORE)

    def operation() -> int:
        return loaded(len(list(writer.store.read_stream(LOAD_STREAM))), STORE)

    return operation, 0


def select_load(writer: Writer, prefix: str) -> tuple[Operation, int]:
    """Checks that psycopg decodes the payloads to dicts, then selects the stream per operation."""
    conn = writer.raw
    rows = conn.execute(RAW_SELECT, (LOAD_STREAM,), prepare=True).fetchall()
    if not all(isinstance(row[RAW_DATA_COLUMN], dict) for row in rows):
        raise RuntimeError("psycopg did not decode the raw payloads to dicts")
    loaded(len(rows), SELECT)

    def operation() -> int:
        return loaded(
            len(conn.execute(RAW_SELECT, (LOAD_STREAM,), prepare=True).fetchall()), SELECT
        )

    return operation, 0


def _raw(writer: Writer) -> psycopg.Connection[Any]:
    return writer.raw


def _raw_txn(writer: Writer) -> psycopg.Connection[Any]:
    return writer.raw_txn


OPERATIONS: Final[dict[tuple[Kind, str], Factory]] = {
    ("new", STORE): store_new(1),
    ("new", RAW): raw_new(insert_autocommit, _raw),
    ("new", RAW_TXN): raw_new(insert_in_transaction, _raw_txn),
    ("existing", STORE): store_existing,
    ("existing", RAW): raw_existing(insert_autocommit, _raw),
    ("existing", RAW_TXN): raw_existing(insert_in_transaction, _raw_txn),
    ("batch", STORE): store_new(BATCH_SIZE),
    ("batch", EXECUTEMANY): executemany_new,
    ("load", STORE): store_load,
    ("load", SELECT): select_load,
}


def worker_main(pipe: Connection, url: str, index: int) -> None:
    """Serves one worker process: opens its connections, then answers commands until stop.

    Commands: ``("setup", kind, side, round_id)`` answers the events written while
    preparing; ``("run", start_at, stop_at)`` answers the round's report; ``("stop",)``.
    Every answer is ``("ok", value)`` or ``("error", traceback)``.
    """
    try:
        writer = Writer(url, index)
    except Exception:
        pipe.send(("error", traceback.format_exc()))
        return
    try:
        pipe.send(("ok", None))
        while True:
            command, *args = pipe.recv()
            if command == "stop":
                return
            try:
                answer: Any = writer.setup(*args) if command == "setup" else writer.run(*args)
                pipe.send(("ok", answer))
            except Exception:
                pipe.send(("error", traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            writer.close()


# ---------------------------------------------------------------------------------------
# The parent: worker pools, rounds, checks.


class WorkerPool:
    """Starts one worker process per writer and commands all of them together over pipes."""

    def __init__(self, context: Any, url: str, count: int) -> None:
        self._pipes: list[Connection] = []
        self._processes: list[Any] = []
        for index in range(count):
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, args=(child, url, index), daemon=True)
            process.start()
            child.close()
            self._pipes.append(parent)
            self._processes.append(process)
        self._answers("start", ANSWER_TIMEOUT)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stops every worker process (they close their connections first)."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()

    def command(self, message: tuple[Any, ...], timeout: float) -> list[Any]:
        """Sends ``message`` to every worker; returns their answers, raising on any error."""
        for pipe in self._pipes:
            pipe.send(message)
        return self._answers(str(message[0]), timeout)

    def _answers(self, what: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        answers = []
        for index, pipe in enumerate(self._pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"worker {index} did not answer {what} in {timeout:.0f} s")
            answers.append(pipe.recv())
        errors = [detail for status, detail in answers if status == "error"]
        if errors:
            raise RuntimeError(f"a worker process failed ({what}):\n{errors[0]}")
        return [detail for _, detail in answers]


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """Describes one measurement: its kind, its writers and its sides (the store first)."""

    key: str
    label: str
    kind: Kind
    writers: int
    sides: tuple[str, ...]

    @property
    def baseline(self) -> str:
        """Returns the side the bars compare the store with."""
        return self.sides[1]


def scenarios() -> list[Scenario]:
    """Returns every scenario, in the order they run and print."""
    single = (STORE, RAW, RAW_TXN)
    new = [
        Scenario(f"new-{n}", f"1 evt/txn, new stream, {plural(n, 'writer')}", "new", n, single)
        for n in WRITER_COUNTS
    ]
    existing = [
        Scenario(
            f"existing-{n}",
            f"1 evt/txn, existing stream, {plural(n, 'writer')}",
            "existing",
            n,
            single,
        )
        for n in WRITER_COUNTS
    ]
    batch = [
        Scenario(
            f"batch-{n}",
            f"{BATCH_SIZE} evt/txn, {plural(n, 'writer')} (raw: executemany)",
            "batch",
            n,
            (STORE, EXECUTEMANY),
        )
        for n in BATCH_WRITER_COUNTS
    ]
    load = Scenario(
        "load", f"load {LOAD_SIZE:,} events (raw: SELECT to dicts)", "load", 1, (STORE, SELECT)
    )
    return [*new, *existing, *batch, load]


CPU_KEY: Final = "cpu-new-1"
CPU_CEILING: Final = 1.3

# Minimum ratios of the store over the scenario's baseline (raw, executemany, select); the
# CPU bar is raw's CPU per append over the store's, so at least 1/1.3 means at most 1.3x.
BARS: Final = (
    Bar("new-4", 0.8, "1 evt/txn, new stream, 4 writers, store/raw"),
    Bar("new-16", 0.7, "1 evt/txn, new stream, 16 writers, store/raw"),
    Bar("existing-4", 0.75, "1 evt/txn, existing stream, 4 writers, store/raw"),
    Bar(
        CPU_KEY,
        1 / CPU_CEILING,
        f"client CPU per append (new stream, 1 writer) raw/store, i.e. store <= {CPU_CEILING}x raw",
    ),
    Bar("batch-1", 1.3, f"{BATCH_SIZE} evt/txn, 1 writer, store/executemany"),
    Bar("batch-4", 1.3, f"{BATCH_SIZE} evt/txn, 4 writers, store/executemany"),
    Bar("load", 1.0, f"load {LOAD_SIZE:,} typed events, store/raw dicts"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Round:
    """Holds one side's round: events, wall seconds, CPU seconds and every worker's report."""

    side: str
    round_id: int
    warmup: bool
    events: int
    wall: float
    cpu: float
    workers: list[dict[str, float]]

    @property
    def rate(self) -> float:
        """Returns events per second over the round's wall time."""
        return self.events / self.wall

    @property
    def cpu_us(self) -> float:
        """Returns the workers' CPU microseconds per event."""
        return self.cpu / self.events * 1e6 if self.events else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """Returns the round as JSON-ready data."""
        return {
            "side": self.side,
            "round": self.round_id,
            "warmup": self.warmup,
            "events": self.events,
            "wall_s": self.wall,
            "events_per_s": self.rate,
            "cpu_s": self.cpu,
            "cpu_us_per_event": self.cpu_us,
            "max_late_s": max(w["late"] for w in self.workers),
            "workers": self.workers,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """Holds every round of every side of one scenario."""

    scenario: Scenario
    rounds: list[Round]

    def timed(self, side: str) -> list[Round]:
        """Returns the side's rounds after its warm-up."""
        return [r for r in self.rounds if r.side == side and not r.warmup]

    def rate(self, side: str) -> float:
        """Returns the side's median events per second."""
        return statistics.median(r.rate for r in self.timed(side))

    def cpu_us(self, side: str) -> float:
        """Returns the side's median client CPU microseconds per event."""
        return statistics.median(r.cpu_us for r in self.timed(side))

    def ratio(self, side: str) -> float:
        """Returns the store's median events per second over the side's."""
        return self.rate(STORE) / self.rate(side)

    def cpu_ratio(self, side: str) -> float:
        """Returns the store's median CPU per event over the side's."""
        return self.cpu_us(STORE) / self.cpu_us(side)

    def as_dict(self) -> dict[str, Any]:
        """Returns the result as JSON-ready data."""
        return {
            "key": self.scenario.key,
            "label": self.scenario.label,
            "writers": self.scenario.writers,
            "sides": {
                side: {
                    "events_per_s_median": self.rate(side),
                    "cpu_us_per_event_median": self.cpu_us(side),
                    **(
                        {}
                        if side == STORE
                        else {"store_ratio": self.ratio(side), "cpu_ratio": self.cpu_ratio(side)}
                    ),
                }
                for side in self.scenario.sides
            },
            "rounds": [r.as_dict() for r in self.rounds],
        }


class Bench:
    """Runs each scenario's rounds on a fresh worker pool, checking what every round stored."""

    def __init__(
        self, url: str, control: psycopg.Connection[Any], settings: Settings, context: Any
    ) -> None:
        self._url = url
        self._control = control
        self._settings = settings
        self._context = context
        self._round_ids = itertools.count()

    def reset(self) -> None:
        """Empties the store's and raw's tables and restarts their identities."""
        tables = [
            sql.Identifier(STORE_SCHEMA, "events"),
            sql.Identifier(STORE_SCHEMA, "streams"),
            sql.Identifier(RAW_SCHEMA, "events"),
        ]
        query = sql.SQL("TRUNCATE {} RESTART IDENTITY").format(sql.SQL(", ").join(tables))
        # Events are append-only in the database; a benchmark's reset says it means it.
        with self._control.transaction():
            self._control.execute("SET LOCAL eventstore.allow_rewrite = 'on'")
            self._control.execute(query)

    def measure(self, scenario: Scenario) -> Result:
        """Warms each side up once, then runs the sides in interleaved rounds."""
        if scenario.kind == "load":
            self.reset()
            write_load_stream(self._url, self._control)
        settings = self._settings
        with WorkerPool(self._context, self._url, scenario.writers) as pool:
            rounds = [
                self.run_round(pool, scenario, side, settings.warmup, warmup=True)
                for side in scenario.sides
            ]
            for _ in range(settings.rounds):
                rounds.extend(
                    self.run_round(pool, scenario, side, settings.duration, warmup=False)
                    for side in scenario.sides
                )
        return Result(scenario, rounds)

    def run_round(
        self, pool: WorkerPool, scenario: Scenario, side: str, duration: float, *, warmup: bool
    ) -> Round:
        """Runs one round of one side: setup in every worker, then the timed part together."""
        writes = scenario.kind != "load"
        if writes:
            self.reset()
        round_id = next(self._round_ids)
        setup = pool.command(("setup", scenario.kind, side, round_id), ANSWER_TIMEOUT)
        start_at = time.monotonic() + START_LEAD
        stop_at = start_at + duration
        reports = pool.command(("run", start_at, stop_at), duration + ANSWER_TIMEOUT)
        events = sum(int(r["events"]) for r in reports)
        if writes:
            stored = count_rows(self._control, STORE_SCHEMA if side == STORE else RAW_SCHEMA)
            expected = events + sum(setup)
            if stored != expected:
                raise RuntimeError(
                    f"{scenario.key} {side}: counted {expected} events "
                    f"({sum(setup)} in setup) but {stored} were stored"
                )
        wall = max(r["ended"] for r in reports) - start_at
        cpu = sum(r["cpu"] for r in reports)
        return Round(side, round_id, warmup, events, wall, cpu, reports)


def count_rows(conn: psycopg.Connection[Any], schema: str) -> int:
    """Returns the number of rows in ``schema.events``."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "events"))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def write_load_stream(url: str, control: psycopg.Connection[Any]) -> None:
    """Writes the `LOAD_SIZE` events the load reads: the store in appends of `BATCH_SIZE`,
    raw in one executemany."""
    with PostgresEventStore(url, registry=REGISTRY, min_size=1, max_size=1) as store:
        for start in range(0, LOAD_SIZE, BATCH_SIZE):
            events = make_events(LOAD_STREAM, min(BATCH_SIZE, LOAD_SIZE - start))
            store.append(LOAD_STREAM, events, expected_version=start)
    rows = raw_rows(LOAD_STREAM, 1, make_events(LOAD_STREAM, LOAD_SIZE))
    with control.transaction():
        control.cursor().executemany(RAW_INSERT, rows)


def create_raw_table(conn: psycopg.Connection[Any]) -> None:
    """Copies the store's events table (columns, defaults, identity, constraints) to raw."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RAW_SCHEMA)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(RAW_SCHEMA, "events"), sql.Identifier(STORE_SCHEMA, "events")
        )
    )


def show(conn: psycopg.Connection[Any], setting: str) -> str:
    """Returns a server setting as ``SHOW`` gives it."""
    row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(setting))).fetchone()
    return str(row[0]) if row else "unknown"


def worker_context() -> Any:
    """Returns a forkserver context whose server has imported this script (and the store).

    Every worker is forked from that clean server, never from this process, so it inherits
    no connection, and it starts without importing everything again.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__"])
    return context


@contextlib.contextmanager
def migrated(url: str) -> Iterator[psycopg.Connection[Any]]:
    """Migrates the scratch database, adds the raw table; yields an autocommit connection."""
    # Imported here: the workers never need alembic.
    from eventstore.migrate import upgrade

    upgrade(url)
    with psycopg.connect(url, autocommit=True) as control:
        create_raw_table(control)
        yield control


def run_all(url: str, settings: Settings) -> tuple[list[Result], dict[str, Any]]:
    """Measures every scenario in a migrated database; returns results and conditions."""
    with migrated(url) as control:
        conditions = {
            "server_version": server_version(control),
            "fsync": show(control, "fsync"),
            "synchronous_commit": show(control, "synchronous_commit"),
            "cpu_count": os.cpu_count(),
            "load_average_at_start": os.getloadavg()[0],
            "settings": dataclasses.asdict(settings),
        }
        bench = Bench(url, control, settings, worker_context())
        results = []
        for scenario in scenarios():
            progress(f"measuring: {scenario.label}")
            results.append(bench.measure(scenario))
        conditions["load_average_at_end"] = os.getloadavg()[0]
    return results, conditions


def ratios(results: Sequence[Result]) -> dict[str, float]:
    """Returns the figures the bars check: store over baseline per scenario, and raw's CPU
    per append over the store's for one writer to new streams."""
    by_key = {r.scenario.key: r for r in results}
    figures = {r.scenario.key: r.ratio(r.scenario.baseline) for r in results}
    figures[CPU_KEY] = 1 / by_key["new-1"].cpu_ratio(RAW)
    return figures


def format_conditions(conditions: dict[str, Any], elapsed: float, late: float) -> str:
    """Returns the lines that say under which conditions the figures were measured."""
    settings = conditions["settings"]
    return (
        f"Postgres {conditions['server_version']}, fsync={conditions['fsync']}, "
        f"synchronous_commit={conditions['synchronous_commit']}, "
        f"{conditions['cpu_count']} CPUs (load average {conditions['load_average_at_start']:.2f}"
        f" at start, {conditions['load_average_at_end']:.2f} at the end)\n"
        f"writers are processes; {settings['rounds']} rounds of {settings['duration']:g} s per "
        f"side after a {settings['warmup']:g} s warm-up, sides interleaved; medians; the latest "
        f"worker start was {late * 1000:.0f} ms after its round's; ran {elapsed:.0f} s"
    )


def latest_start(results: Sequence[Result]) -> float:
    """Returns the most seconds any worker began a timed round after the round's start."""
    return max(
        w["late"] for r in results for rnd in r.rounds if not rnd.warmup for w in rnd.workers
    )


def format_table(results: Sequence[Result]) -> str:
    """Returns ev/s, ratios and client CPU per event of every side as a text table."""
    width = max(len(r.scenario.label) for r in results)
    columns = (
        ("store ev/s", 10),
        ("raw ev/s", 10),
        ("txn ev/s", 10),
        ("s/raw", 5),
        ("s/txn", 5),
        ("store us", 8),
        ("raw us", 8),
        ("txn us", 8),
        ("cpu s/raw", 9),
    )
    header = "  ".join([f"{'scenario':<{width}}", *(f"{name:>{w}}" for name, w in columns)])
    lines = [header, "-" * len(header)]
    for r in results:
        cells = "  ".join(
            f"{cell:>{w}}" for cell, (_, w) in zip(table_cells(r), columns, strict=True)
        )
        lines.append(f"{r.scenario.label:<{width}}  {cells}")
    return "\n".join(lines)


def table_cells(result: Result) -> list[str]:
    """Returns one scenario's cells: a dash where it has no second raw side."""
    sides = result.scenario.sides
    base = sides[1]
    txn = sides[2] if len(sides) > 2 else None
    return [
        f"{result.rate(STORE):,.0f}",
        f"{result.rate(base):,.0f}",
        "-" if txn is None else f"{result.rate(txn):,.0f}",
        f"{result.ratio(base):.2f}",
        "-" if txn is None else f"{result.ratio(txn):.2f}",
        f"{result.cpu_us(STORE):.1f}",
        f"{result.cpu_us(base):.1f}",
        "-" if txn is None else f"{result.cpu_us(txn):.1f}",
        f"{result.cpu_ratio(base):.2f}",
    ]


LEGEND: Final = (
    "raw: one prepared one-row INSERT on an autocommit connection; txn: the same INSERT in\n"
    "BEGIN/COMMIT; s/raw, s/txn: the store's ev/s over theirs; us: client CPU (user+sys of\n"
    "the writer processes) in microseconds per event; cpu s/raw: the store's CPU per event\n"
    "over raw's."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints conditions, table and bars; returns 1 when a bar fails."""
    args = parse_args(
        argv, __doc__, "admin URL of the server; a scratch database is created and dropped there"
    )
    settings = QUICK if args.quick else FULL
    url = admin_url(args.url)
    started = time.perf_counter()
    with scratch_database(url) as scratch:
        results, conditions = run_all(scratch, settings)
    elapsed = time.perf_counter() - started
    checked = check_bars(ratios(results), BARS)
    print(format_conditions(conditions, elapsed, latest_start(results)))
    print()
    print(format_table(results))
    print(LEGEND)
    print()
    print(format_bars(checked))
    if args.json is not None:
        write_json(args.json, results, checked, {**conditions, "elapsed_s": elapsed})
    return 0 if all(ok for _, _, ok in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
