"""Measures the event store against raw psycopg on the same table shape, side by side.

Run ``python benchmarks/append.py [--url URL] [--quick] [--json PATH]``. The script creates
a scratch database on the server behind ``--url`` (default: ``EVENTSTORE_DATABASE_URL``, else
a local server), migrates it, copies ``eventstore.events`` into ``raw.events`` with
``LIKE ... INCLUDING ALL``, measures every scenario for both sides in alternating rounds,
prints median events per second and the ratio store/raw, checks the bars of the issue and
drops the database again. The exit status is 1 when a bar fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Final, Protocol

import psycopg
from _common import (
    Bar,
    Step,
    admin_url,
    check_bars,
    format_bars,
    parse_args,
    plural,
    progress,
    run_steps,
    scratch_database,
    server_version,
    write_json,
)
from psycopg import sql

from eventstore import NO_STREAM, Event, EventRegistry, PostgresEventStore, uuid7
from eventstore.migrate import upgrade

STORE_SCHEMA: Final = "eventstore"
RAW_SCHEMA: Final = "raw"
WRITER_COUNTS: Final = (1, 4, 16)
BATCH_WRITER_COUNTS: Final = (1, 4)
MAX_WRITERS: Final = max(*WRITER_COUNTS, *BATCH_WRITER_COUNTS)
BATCH_SIZE: Final = 100
LOAD_SIZE: Final = 1000
LOAD_STREAM: Final = "load-0"


class Deposited(Event):
    """Records money paid into an account."""

    event_type: ClassVar[str] = "bench.Deposited"
    account_id: str
    amount: int
    currency: str
    note: str


REGISTRY: Final = EventRegistry([Deposited])

RAW_INSERT: Final = sql.SQL(
    "INSERT INTO {} (stream_id, version, event_id, event_type, schema_version, shard_key, "
    "data, metadata) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
).format(sql.Identifier(RAW_SCHEMA, "events"))

# The same columns the store reads; psycopg decodes both jsonb columns to dicts.
RAW_SELECT: Final = sql.SQL(
    "SELECT global_position, stream_id, version, event_id, event_type, schema_version, data, "
    "metadata, recorded_at, transaction_id::text::bigint FROM {} WHERE stream_id = %s "
    "ORDER BY version"
).format(sql.Identifier(RAW_SCHEMA, "events"))
RAW_DATA_COLUMN: Final = 6


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Holds how long each round lasts and how many rounds each side gets."""

    rounds: int
    duration: float
    warmup: float


FULL: Final = Settings(rounds=7, duration=0.9, warmup=0.3)
QUICK: Final = Settings(rounds=3, duration=0.4, warmup=0.1)


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


class Side(Protocol):
    """Runs the operations of one contender on its own table."""

    name: str

    def append_new(self, writer: int, batch: int) -> Step:
        """Returns a step that writes ``batch`` events to a new stream per call."""
        ...

    def append_existing(self, writer: int) -> Step:
        """Creates the writer's stream and returns a step that appends one event to it."""
        ...

    def prepare_load(self, stream_id: str, count: int) -> None:
        """Writes a stream of ``count`` events to load later."""
        ...

    def load(self, stream_id: str) -> Step:
        """Checks a load once and returns a step that loads the whole stream."""
        ...

    def stored_events(self) -> int:
        """Returns how many events the side's table holds."""
        ...


class StoreSide:
    """Drives `PostgresEventStore`: its own pool, autocommit appends, typed reads."""

    name = "store"

    def __init__(self, store: PostgresEventStore, control: psycopg.Connection[Any]) -> None:
        self._store = store
        self._control = control

    def append_new(self, writer: int, batch: int) -> Step:
        """Returns a step that appends ``batch`` events to a new stream with NO_STREAM."""
        counter = itertools.count()

        def step() -> int:
            stream_id = f"acct-{writer}-{next(counter)}"
            events = make_events(stream_id, batch)
            self._store.append(stream_id, events, expected_version=NO_STREAM)
            return batch

        return step

    def append_existing(self, writer: int) -> Step:
        """Creates the writer's stream and returns a step appending at the exact version."""
        stream_id = f"existing-{writer}"
        first = self._store.append(stream_id, make_events(stream_id, 1), expected_version=NO_STREAM)
        version = first.next_expected_version

        def step() -> int:
            nonlocal version
            event = make_events(stream_id, 1)[0]
            version = self._store.append(stream_id, event, expected_version=version).last_version
            return 1

        return step

    def prepare_load(self, stream_id: str, count: int) -> None:
        """Appends ``count`` events to one stream in batches of `BATCH_SIZE`."""
        for start in range(0, count, BATCH_SIZE):
            events = make_events(stream_id, min(BATCH_SIZE, count - start))
            self._store.append(stream_id, events, expected_version=start)

    def load(self, stream_id: str) -> Step:
        """Checks that a load yields typed events, then returns a step that loads them."""
        events = list(self._store.read_stream(stream_id))
        if not events or not all(isinstance(e.data, Deposited) for e in events):
            raise RuntimeError("the store did not load typed Deposited events")

        def step() -> int:
            return len(list(self._store.read_stream(stream_id)))

        return step

    def stored_events(self) -> int:
        """Returns the row count of the store's events table."""
        return count_rows(self._control, STORE_SCHEMA)


class RawSide:
    """Drives plain psycopg: one connection per writer, explicit transactions."""

    name = "raw"

    def __init__(
        self, conns: Sequence[psycopg.Connection[Any]], control: psycopg.Connection[Any]
    ) -> None:
        self._conns = conns
        self._control = control

    def append_new(self, writer: int, batch: int) -> Step:
        """Returns a step that inserts ``batch`` rows of a new stream in one transaction."""
        conn = self._conns[writer]
        counter = itertools.count()

        def step() -> int:
            stream_id = f"acct-{writer}-{next(counter)}"
            insert_rows(conn, raw_rows(stream_id, 1, make_events(stream_id, batch)))
            return batch

        return step

    def append_existing(self, writer: int) -> Step:
        """Creates the writer's stream and returns a step inserting its next version."""
        conn = self._conns[writer]
        stream_id = f"existing-{writer}"
        insert_rows(conn, raw_rows(stream_id, 1, make_events(stream_id, 1)))
        version = 1

        def step() -> int:
            nonlocal version
            insert_rows(conn, raw_rows(stream_id, version + 1, make_events(stream_id, 1)))
            version += 1
            return 1

        return step

    def prepare_load(self, stream_id: str, count: int) -> None:
        """Inserts ``count`` rows of one stream in one transaction."""
        insert_rows(self._conns[0], raw_rows(stream_id, 1, make_events(stream_id, count)))

    def load(self, stream_id: str) -> Step:
        """Checks that a load yields dict payloads, then returns a step that loads the rows."""
        conn = self._conns[0]
        rows = conn.execute(RAW_SELECT, (stream_id,)).fetchall()
        if not rows or not all(isinstance(r[RAW_DATA_COLUMN], dict) for r in rows):
            raise RuntimeError("psycopg did not decode the raw payloads to dicts")

        def step() -> int:
            return len(conn.execute(RAW_SELECT, (stream_id,)).fetchall())

        return step

    def stored_events(self) -> int:
        """Returns the row count of the raw events table."""
        return count_rows(self._control, RAW_SCHEMA)


def insert_rows(conn: psycopg.Connection[Any], rows: Sequence[tuple[Any, ...]]) -> None:
    """Inserts rows in one explicit transaction: one execute, or executemany for several."""
    with conn.transaction():
        if len(rows) == 1:
            conn.execute(RAW_INSERT, rows[0])
        else:
            conn.cursor().executemany(RAW_INSERT, rows)


def count_rows(conn: psycopg.Connection[Any], schema: str) -> int:
    """Returns the number of rows in ``schema.events``."""
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "events"))
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


@dataclasses.dataclass(frozen=True, slots=True)
class Scenario:
    """Describes one measurement: its writers, each writer's step and any one-off setup.

    Without ``prepare`` the tables are truncated before every round; with it they are
    truncated once and ``prepare`` fills them for every side before the rounds.
    """

    key: str
    label: str
    writers: int
    steps: Callable[[Side, int], Step]
    prepare: Callable[[Side], None] | None = None


def one_to_new_stream(side: Side, writer: int) -> Step:
    """Returns the writer's step for one event per transaction to a new stream."""
    return side.append_new(writer, 1)


def one_to_existing_stream(side: Side, writer: int) -> Step:
    """Returns the writer's step for one event per transaction to its existing stream."""
    return side.append_existing(writer)


def batch_to_new_stream(side: Side, writer: int) -> Step:
    """Returns the writer's step for `BATCH_SIZE` events per transaction."""
    return side.append_new(writer, BATCH_SIZE)


def load_stream(side: Side, writer: int) -> Step:
    """Returns the step that loads the prepared stream."""
    return side.load(LOAD_STREAM)


def prepare_load_stream(side: Side) -> None:
    """Writes the stream of `LOAD_SIZE` events that the load scenario reads."""
    side.prepare_load(LOAD_STREAM, LOAD_SIZE)


def scenarios() -> list[Scenario]:
    """Returns every scenario, in the order they run and print."""
    new = [
        Scenario(f"new-{n}", f"1 evt/txn, new stream, {plural(n, 'writer')}", n, one_to_new_stream)
        for n in WRITER_COUNTS
    ]
    existing = [
        Scenario(
            f"existing-{n}",
            f"1 evt/txn, existing stream, {plural(n, 'writer')}",
            n,
            one_to_existing_stream,
        )
        for n in WRITER_COUNTS
    ]
    batch = [
        Scenario(
            f"batch-{n}", f"{BATCH_SIZE} evt/txn, {plural(n, 'writer')}", n, batch_to_new_stream
        )
        for n in BATCH_WRITER_COUNTS
    ]
    load = Scenario(
        "load", f"load {LOAD_SIZE:,} events (typed vs dicts)", 1, load_stream, prepare_load_stream
    )
    return [*new, *existing, *batch, load]


# Minimum ratios store/raw.
BARS: Final = (
    Bar("new-4", 0.75, "new stream, 4 writers"),
    Bar("batch-1", 1.0, f"{BATCH_SIZE} events/txn"),
    Bar("load", 0.5, f"typed load of {LOAD_SIZE:,}"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """Holds every round's events per second of both sides for one scenario."""

    scenario: Scenario
    store: list[float]
    raw: list[float]

    @property
    def store_median(self) -> float:
        """Returns the store's median events per second."""
        return statistics.median(self.store)

    @property
    def raw_median(self) -> float:
        """Returns raw psycopg's median events per second."""
        return statistics.median(self.raw)

    @property
    def ratio(self) -> float:
        """Returns the store's median over raw psycopg's."""
        return self.store_median / self.raw_median

    def as_dict(self) -> dict[str, Any]:
        """Returns the result as JSON-ready data."""
        return {
            "key": self.scenario.key,
            "label": self.scenario.label,
            "writers": self.scenario.writers,
            "store_rounds": self.store,
            "raw_rounds": self.raw,
            "store_median": self.store_median,
            "raw_median": self.raw_median,
            "ratio": self.ratio,
        }


class Bench:
    """Runs scenarios for both sides, truncating the tables through a control connection."""

    def __init__(self, sides: Sequence[Side], control: psycopg.Connection[Any]) -> None:
        self._sides = sides
        self._control = control

    def reset(self) -> None:
        """Empties every table of both sides and restarts their identities."""
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

    def measure(self, scenario: Scenario, settings: Settings) -> Result:
        """Warms both sides up, then measures them in alternating rounds (ABAB)."""
        if scenario.prepare is not None:
            self.reset()
            for side in self._sides:
                scenario.prepare(side)
        for side in self._sides:
            self.run_round(scenario, side, settings.warmup)
        rates: dict[str, list[float]] = {side.name: [] for side in self._sides}
        for _ in range(settings.rounds):
            for side in self._sides:
                rates[side.name].append(self.run_round(scenario, side, settings.duration))
        return Result(scenario, rates[StoreSide.name], rates[RawSide.name])

    def run_round(self, scenario: Scenario, side: Side, duration: float) -> float:
        """Runs one round of a scenario for one side; returns its events per second."""
        if scenario.prepare is None:
            self.reset()
        steps = [scenario.steps(side, writer) for writer in range(scenario.writers)]
        before = side.stored_events()
        events, elapsed = run_steps(steps, duration)
        if scenario.prepare is None:
            check_written(side, events, side.stored_events() - before)
        return events / elapsed


def check_written(side: Side, counted: int, stored: int) -> None:
    """Raises unless a round stored exactly the events it counted."""
    if counted != stored:
        raise RuntimeError(f"{side.name}: counted {counted} events but {stored} were stored")


def create_raw_table(conn: psycopg.Connection[Any]) -> None:
    """Copies the store's events table (columns, defaults, identity, constraints) to raw."""
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(RAW_SCHEMA)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            sql.Identifier(RAW_SCHEMA, "events"), sql.Identifier(STORE_SCHEMA, "events")
        )
    )


@contextmanager
def raw_connections(url: str, count: int) -> Iterator[list[psycopg.Connection[Any]]]:
    """Opens ``count`` autocommit connections and closes them afterwards."""
    conns: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(count):
            conns.append(psycopg.connect(url, autocommit=True))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def run_all(url: str, settings: Settings) -> tuple[list[Result], str]:
    """Sets up both sides in a migrated database and measures every scenario.

    Returns the results and the server's version.
    """
    upgrade(url)
    with psycopg.connect(url, autocommit=True) as control:
        create_raw_table(control)
        server = server_version(control)
        results = []
        with raw_connections(url, MAX_WRITERS) as conns:
            raw = RawSide(conns, control)
            for scenario in scenarios():
                progress(f"measuring: {scenario.label}")
                # A pool of exactly one connection per writer, as raw psycopg gets.
                size = scenario.writers
                with PostgresEventStore(
                    url, registry=REGISTRY, min_size=size, max_size=size
                ) as store:
                    bench = Bench([StoreSide(store, control), raw], control)
                    results.append(bench.measure(scenario, settings))
    return results, server


def format_table(results: Sequence[Result]) -> str:
    """Returns the results as a text table."""
    width = max(len(r.scenario.label) for r in results)
    lines = [f"{'scenario':<{width}}  {'store ev/s':>12}  {'raw ev/s':>12}  {'ratio':>6}"]
    lines.append("-" * len(lines[0]))
    for r in results:
        lines.append(
            f"{r.scenario.label:<{width}}  {r.store_median:>12,.0f}  {r.raw_median:>12,.0f}"
            f"  {r.ratio:>6.2f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints the table; returns 1 when a bar fails."""
    args = parse_args(
        argv, __doc__, "admin URL of the server; a scratch database is created and dropped there"
    )
    settings = QUICK if args.quick else FULL
    url = admin_url(args.url)
    started = time.perf_counter()
    with scratch_database(url) as scratch:
        results, server = run_all(scratch, settings)
    elapsed = time.perf_counter() - started
    checked = check_bars({r.scenario.key: r.ratio for r in results}, BARS)
    print(
        f"Postgres {server}, {os.cpu_count()} CPUs, {settings.rounds} rounds of "
        f"{settings.duration:g} s per side (ABAB), medians; ran {elapsed:.0f} s\n"
    )
    print(format_table(results))
    print()
    print(format_bars(checked))
    if args.json is not None:
        context = {
            "server_version": server,
            "cpu_count": os.cpu_count(),
            "settings": dataclasses.asdict(settings),
            "elapsed_s": elapsed,
        }
        write_json(args.json, results, checked, context)
    return 0 if all(ok for _, _, ok in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
