"""Measures aggregate loads and commands, against the `eventsourcing` package side by side.

Run ``python benchmarks/aggregates.py [--url URL] [--quick] [--json PATH]`` in an environment
that has `eventsourcing` (see ``benchmarks/requirements-aggregates.txt``; it is never a
dependency of the project). The script creates two scratch databases on the server behind
``--url`` (default: ``EVENTSTORE_DATABASE_URL``, else a local server): one migrated for the
store, one where `eventsourcing`'s Postgres persistence creates its own tables. It measures:

- loading an `examples.bank.Account` of 1,000 events without a snapshot, against
  `eventsourcing`'s ``repository.get`` of an equivalent aggregate (no cache, no snapshots);
- loading an account of 100,099 events with a snapshot every 100, against a full replay;
- one command plus save, sequentially, against `eventsourcing`'s get, command and save;
- ``Repository.update`` with 8 writer threads on one aggregate, against a single writer,
  counting how often commands ran again after a concurrent writer won.

Both sides of a scenario run in alternating rounds; the table shows medians and ratios.
The exit status is 1 when a bar fails, 2 when `eventsourcing` is missing.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from typing import Any, ClassVar, Final
from uuid import UUID

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
from psycopg.conninfo import conninfo_to_dict

from eventstore import Event, PostgresEventStore, Repository, WrongExpectedVersionError
from eventstore.aggregates.aggregate import stream_id_for, to_snapshot
from eventstore.demo.bank import Account, AccountOpened, MoneyDeposited, registry
from eventstore.migrate import upgrade

try:
    from eventsourcing.application import Application
    from eventsourcing.domain import Aggregate as ESAggregate
    from eventsourcing.domain import event
except ImportError as missing:
    print(
        f"benchmarks/aggregates.py compares against the `eventsourcing` package: {missing}.\n"
        "Install it in a separate environment, never as a project dependency:\n\n"
        "    python3 -m venv .venv-bench\n"
        "    .venv-bench/bin/pip install -e . -r benchmarks/requirements-aggregates.txt\n"
        "    .venv-bench/bin/python benchmarks/aggregates.py",
        file=sys.stderr,
    )
    sys.exit(2)

LOAD_EVENTS: Final = 1_000
SNAPSHOT_EVERY: Final = 100
BIG_EVENTS: Final = 100_000
BIG_TAIL: Final = SNAPSHOT_EVERY - 1
BIG_TOTAL: Final = BIG_EVENTS + BIG_TAIL
BUILD_BATCH: Final = 10_000
WRITERS: Final = 8
ATTEMPTS: Final = 100
DEPOSIT: Final = 100
OWNER: Final = "Ada Lovelace"

Round = Callable[[], float]
"""Runs one round of one side and returns its rate per second."""


class BankAccount(ESAggregate):
    """Holds an account's balance the `eventsourcing` way, with the bank example's events.

    As in `examples.bank.Account`, the command validates and a handler applies the event.
    """

    @event("Opened")
    def __init__(self, owner: str, currency: str = "EUR") -> None:
        self.owner = owner
        self.balance = 0
        self.closed = False

    def deposit(self, amount: int, reference: str = "") -> None:
        """Records a deposit after the same checks as the bank example's command."""
        if self.closed:
            raise ValueError(f"account {self.id} is closed")
        if amount < 0:
            raise ValueError("amounts are positive")
        self._deposited(amount, reference)

    @event("Deposited")
    def _deposited(self, amount: int, reference: str) -> None:
        self.balance += amount


class Bank(Application[UUID]):
    """Stores bank accounts without snapshots."""

    name = "BenchBank"


class SnapshottingBank(Application[UUID]):
    """Stores bank accounts with a snapshot every `SNAPSHOT_EVERY` events."""

    name = "BenchSnapshottingBank"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {BankAccount: SNAPSHOT_EVERY}


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Holds the rounds per side, their length, the warm-up and the 100k full replays."""

    rounds: int
    duration: float
    warmup: float
    full_replays: int


FULL: Final = Settings(rounds=7, duration=1.5, warmup=0.5, full_replays=3)
QUICK: Final = Settings(rounds=3, duration=0.5, warmup=0.2, full_replays=1)


@dataclasses.dataclass(slots=True)
class Tally:
    """Counts one writer's command runs, successful commands and commands that gave up."""

    runs: int = 0
    commands: int = 0
    gave_up: int = 0

    def add(self, other: Tally) -> None:
        """Adds another tally's counts to this one."""
        self.runs += other.runs
        self.commands += other.commands
        self.gave_up += other.gave_up

    @property
    def retries(self) -> int:
        """Returns how many command runs were repeats after a concurrent writer won."""
        return self.runs - self.commands - self.gave_up


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """Holds every round's rate of eventkeeper and of the baseline for one scenario."""

    key: str
    label: str
    unit: str
    baseline_label: str
    ours: list[float]
    baseline: list[float]
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ours_median(self) -> float:
        """Returns eventkeeper's median rate."""
        return statistics.median(self.ours)

    @property
    def baseline_median(self) -> float:
        """Returns the baseline's median rate."""
        return statistics.median(self.baseline)

    @property
    def ratio(self) -> float:
        """Returns eventkeeper's median over the baseline's."""
        return self.ours_median / self.baseline_median

    def as_dict(self) -> dict[str, Any]:
        """Returns the result as JSON-ready data."""
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "baseline": self.baseline_label,
            "ours_rounds": self.ours,
            "baseline_rounds": self.baseline,
            "ours_median": self.ours_median,
            "baseline_median": self.baseline_median,
            "ratio": self.ratio,
            **self.extra,
        }


# Minimum ratios eventkeeper/baseline.
BARS: Final = (Bar("load-1000", 7.0, f"load {LOAD_EVENTS:,} events vs eventsourcing"),)


def timed(steps: Sequence[Step], duration: float) -> Round:
    """Returns a round that runs the steps (one thread each) for ``duration`` seconds."""

    def round_() -> float:
        units, elapsed = run_steps(steps, duration)
        return units / elapsed

    return round_


def once(step: Step) -> Round:
    """Returns a round that runs the step a single time: for operations of seconds."""

    def round_() -> float:
        started = time.perf_counter()
        units = step()
        return units / (time.perf_counter() - started)

    return round_


def alternate(
    ours: Round, baseline: Round, rounds: int, baseline_rounds: int | None = None
) -> tuple[list[float], list[float]]:
    """Runs both sides in alternating rounds (ABAB); the baseline may stop early."""
    ours_rates: list[float] = []
    baseline_rates: list[float] = []
    for n in range(rounds):
        ours_rates.append(ours())
        if baseline_rounds is None or n < baseline_rounds:
            baseline_rates.append(baseline())
    return ours_rates, baseline_rates


def check_account(label: str, balance: int, version: int, events: int) -> None:
    """Raises unless an account of ``events`` events (one opening, deposits) loaded right."""
    expected = (events - 1) * DEPOSIT
    if version != events or balance != expected:
        raise RuntimeError(
            f"{label}: loaded version {version}, balance {balance}; "
            f"expected version {events}, balance {expected}"
        )


def account_events(first_version: int, count: int) -> list[Event]:
    """Returns the events at versions ``first_version..`` of an account: opening, deposits."""
    events: list[Event] = [AccountOpened(owner=OWNER)] if first_version == 1 else []
    events += [MoneyDeposited(amount=DEPOSIT) for _ in range(count - len(events))]
    return events


def build_account(store: PostgresEventStore, account_id: str, events: int) -> None:
    """Appends an opening and ``events - 1`` deposits to a new account in big batches."""
    stream_id = stream_id_for(Account, account_id)
    version = 0
    while version < events:
        batch = account_events(version + 1, min(BUILD_BATCH, events - version))
        version = store.append(stream_id, batch, expected_version=version).last_version


def build_bank_account(app: Application[UUID], events: int) -> UUID:
    """Saves an `eventsourcing` account of an opening and ``events - 1`` deposits at once."""
    account = BankAccount(owner=OWNER)
    for _ in range(events - 1):
        account.deposit(DEPOSIT)
    app.save(account)
    return account.id


def bank_env(url: str, *, snapshots: bool) -> dict[str, str]:
    """Returns `eventsourcing`'s settings for its Postgres persistence in ``url``'s database.

    The aggregate cache stays off and, unless asked for, so do snapshots: every
    ``repository.get`` then selects and replays all of the aggregate's events.
    """
    info = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info["dbname"]),
        "POSTGRES_HOST": str(info.get("host", "")),
        "POSTGRES_PORT": str(info.get("port", "5432")),
        "POSTGRES_USER": str(info.get("user", "postgres")),
        "POSTGRES_PASSWORD": str(info.get("password", "")),
        "AGGREGATE_CACHE_MAXSIZE": "",
        "IS_SNAPSHOTTING_ENABLED": "y" if snapshots else "n",
    }


@contextmanager
def counting_selects(app: Application[UUID]) -> Iterator[list[int]]:
    """Yields a list that gets the row count of every events select of the app's recorder."""
    recorder = app.recorder
    select = recorder.select_events
    counts: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        rows = select(*args, **kwargs)
        counts.append(len(rows))
        return rows

    recorder.select_events = counted  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        del recorder.select_events


def warm_up_bank(app: Application[UUID], steps: Sequence[Step], duration: float) -> None:
    """Warms `eventsourcing` up and checks that every get replayed all events from Postgres.

    Raises when the repository has a cache or a snapshot store, or when any get selected
    fewer than all of the aggregate's events from the Postgres recorder.
    """
    if app.repository.cache is not None or app.snapshots is not None:
        raise RuntimeError("eventsourcing: the aggregate cache and snapshots must be off")
    with counting_selects(app) as counts:
        gets, _ = run_steps(steps, duration)
    if len(counts) != gets or any(count != LOAD_EVENTS for count in counts):
        raise RuntimeError(f"eventsourcing: {gets} gets but these selects: {counts}")


def measure_load(ours_url: str, bank_url: str, settings: Settings) -> Result:
    """Loads a 1,000-event account with both libraries, no snapshots, no caches."""
    progress(f"measuring: load {LOAD_EVENTS:,} events vs eventsourcing")
    with (
        PostgresEventStore(ours_url, registry=registry, min_size=1, max_size=1) as store,
        closing(Bank(env=bank_env(bank_url, snapshots=False))) as app,
    ):
        build_account(store, "load", LOAD_EVENTS)
        repo = Repository(store, Account)
        bank_id = build_bank_account(app, LOAD_EVENTS)

        def ours() -> int:
            account = repo.get("load")
            check_account("eventkeeper", account.balance, account.version, LOAD_EVENTS)
            return 1

        def theirs() -> int:
            account: BankAccount = app.repository.get(bank_id)
            check_account("eventsourcing", account.balance, account.version, LOAD_EVENTS)
            return 1

        run_steps([ours], settings.warmup)
        warm_up_bank(app, [theirs], settings.warmup)
        rates = alternate(
            timed([ours], settings.duration), timed([theirs], settings.duration), settings.rounds
        )
    result = Result(
        "load-1000",
        f"load {LOAD_EVENTS:,} events, no snapshot",
        "gets/s",
        "eventsourcing repository.get",
        *rates,
    )
    note = (
        f"load {LOAD_EVENTS:,} events: eventkeeper {result.ours_median * LOAD_EVENTS:,.0f} "
        f"events/s, eventsourcing {result.baseline_median * LOAD_EVENTS:,.0f} events/s"
    )
    return dataclasses.replace(result, notes=(note,))


def prepare_big_account(store: PostgresEventStore, account_id: str) -> None:
    """Builds the 100,099-event account: snapshot at 100,000, then a 99-event tail.

    That tail is the longest one ``snapshot_every=100`` leaves behind.
    """
    build_account(store, account_id, BIG_EVENTS)
    account = Repository(store, Account).get(account_id)
    (last,) = store.read_stream(account.stream_id, direction="backward", limit=1)
    store.save_snapshot(to_snapshot(account, last.event_id))
    for _ in range(BIG_TAIL):
        account.deposit(DEPOSIT)
    Repository(store, Account, snapshot_every=SNAPSHOT_EVERY).save(account)
    snapshot = store.load_snapshot(account.stream_id)
    if snapshot is None or snapshot.version != BIG_EVENTS:
        found = None if snapshot is None else snapshot.version
        raise RuntimeError(f"expected the snapshot at {BIG_EVENTS}, found {found}")


def measure_snapshot_load(ours_url: str, settings: Settings) -> Result:
    """Loads a 100,099-event account from its snapshot and, a few times, by full replay."""
    progress(f"measuring: load {BIG_TOTAL:,} events, snapshot every {SNAPSHOT_EVERY}")
    with PostgresEventStore(ours_url, registry=registry, min_size=1, max_size=1) as store:
        prepare_big_account(store, "big")
        snapshotted = Repository(store, Account, snapshot_every=SNAPSHOT_EVERY)
        replayed = Repository(store, Account)

        def from_snapshot() -> int:
            account = snapshotted.get("big")
            check_account("snapshot load", account.balance, account.version, BIG_TOTAL)
            return 1

        def full_replay() -> int:
            account = replayed.get("big")
            check_account("full replay", account.balance, account.version, BIG_TOTAL)
            return 1

        run_steps([from_snapshot], settings.warmup)
        rates = alternate(
            timed([from_snapshot], settings.duration),
            once(full_replay),
            settings.rounds,
            baseline_rounds=settings.full_replays,
        )
    result = Result(
        "load-100k-snapshot",
        f"load {BIG_TOTAL:,} events, snapshot every {SNAPSHOT_EVERY}",
        "gets/s",
        "same stream, full replay",
        *rates,
    )
    note = (
        f"load {BIG_TOTAL:,} events: snapshot + {BIG_TAIL} events "
        f"{1000 / result.ours_median:.1f} ms; full replay {1 / result.baseline_median:.2f} s "
        f"({result.baseline_median * BIG_TOTAL:,.0f} events/s, median of "
        f"{len(result.baseline)})"
    )
    return dataclasses.replace(result, notes=(note,))


def measure_command(ours_url: str, bank_url: str, settings: Settings) -> Result:
    """Runs one deposit plus save at a time with both libraries, snapshots every 100."""
    progress("measuring: one command plus save vs eventsourcing")
    with (
        PostgresEventStore(ours_url, registry=registry, min_size=1, max_size=1) as store,
        closing(SnapshottingBank(env=bank_env(bank_url, snapshots=True))) as app,
    ):
        repo = Repository(store, Account, snapshot_every=SNAPSHOT_EVERY)
        repo.update("command", lambda account: account.open(OWNER), create=True)
        bank_id = build_bank_account(app, 1)
        done: Counter[str] = Counter()

        def ours() -> int:
            repo.update("command", lambda account: account.deposit(DEPOSIT))
            done["ours"] += 1
            return 1

        def theirs() -> int:
            account: BankAccount = app.repository.get(bank_id)
            account.deposit(DEPOSIT)
            app.save(account)
            done["theirs"] += 1
            return 1

        run_steps([ours], settings.warmup)
        run_steps([theirs], settings.warmup)
        rates = alternate(
            timed([ours], settings.duration), timed([theirs], settings.duration), settings.rounds
        )
        mine = repo.get("command")
        check_account("eventkeeper commands", mine.balance, mine.version, done["ours"] + 1)
        bank: BankAccount = app.repository.get(bank_id)
        check_account("eventsourcing commands", bank.balance, bank.version, done["theirs"] + 1)
    return Result(
        "command",
        f"1 command + save, snapshot every {SNAPSHOT_EVERY}",
        "cmds/s",
        "eventsourcing get+deposit+save",
        *rates,
    )


def update_step(repo: Repository[Account], account_id: str, tally: Tally) -> Step:
    """Returns a step that deposits through ``repo.update``, counting runs and give-ups."""

    def command(account: Account) -> None:
        tally.runs += 1
        account.deposit(1)

    def step() -> int:
        try:
            repo.update(account_id, command)
        except WrongExpectedVersionError:
            tally.gave_up += 1
            return 0
        tally.commands += 1
        return 1

    return step


def contention_round(
    repo: Repository[Account], writers: int, duration: float, total: Tally
) -> Round:
    """Returns a round of ``writers`` threads updating one account; adds up their tallies."""

    def round_() -> float:
        tallies = [Tally() for _ in range(writers)]
        steps = [update_step(repo, "contended", tally) for tally in tallies]
        commands, elapsed = run_steps(steps, duration)
        for tally in tallies:
            total.add(tally)
        return commands / elapsed

    return round_


def contention_note(writers: int, tally: Tally) -> str:
    """Returns the line that tells how often the writers' commands ran again."""
    per_command = tally.retries / tally.commands if tally.commands else 0.0
    return (
        f"update, {plural(writers, 'writer')}: {tally.commands:,} commands from {tally.runs:,} "
        f"command runs: {tally.retries:,} retries ({per_command:.2f} per command), "
        f"{tally.gave_up} gave up after {ATTEMPTS} attempts"
    )


def measure_contention(ours_url: str, settings: Settings) -> Result:
    """Updates one account from 8 threads, then from one, in alternating rounds."""
    progress(f"measuring: update, {WRITERS} writers on one aggregate vs 1 writer")
    with PostgresEventStore(
        ours_url, registry=registry, min_size=WRITERS, max_size=WRITERS
    ) as store:
        repo = Repository(store, Account, attempts=ATTEMPTS, snapshot_every=SNAPSHOT_EVERY)
        repo.update("contended", lambda account: account.open(OWNER), create=True)
        warm, many, one = Tally(), Tally(), Tally()
        contention_round(repo, WRITERS, settings.warmup, warm)()
        contention_round(repo, 1, settings.warmup, warm)()
        rates = alternate(
            contention_round(repo, WRITERS, settings.duration, many),
            contention_round(repo, 1, settings.duration, one),
            settings.rounds,
        )
        account = repo.get("contended")
        deposits = warm.commands + many.commands + one.commands
        if account.balance != deposits or account.version != deposits + 1:
            raise RuntimeError(
                f"contention: {deposits} commands succeeded but the account has balance "
                f"{account.balance} at version {account.version}"
            )
    return Result(
        "update-8-writers",
        f"update, {WRITERS} writers on 1 aggregate",
        "cmds/s",
        "update, 1 writer",
        *rates,
        notes=(contention_note(WRITERS, many), contention_note(1, one)),
        extra={
            f"writers_{WRITERS}": dataclasses.asdict(many),
            "writers_1": dataclasses.asdict(one),
        },
    )


def run_all(url: str, settings: Settings) -> tuple[list[Result], str]:
    """Creates both scratch databases, measures every scenario and drops them again.

    Returns the results and the server's version.
    """
    with scratch_database(url) as ours_url, scratch_database(url) as bank_url:
        upgrade(ours_url)
        with psycopg.connect(ours_url) as conn:
            server = server_version(conn)
        results = [
            measure_load(ours_url, bank_url, settings),
            measure_snapshot_load(ours_url, settings),
            measure_command(ours_url, bank_url, settings),
            measure_contention(ours_url, settings),
        ]
    return results, server


def format_table(results: Sequence[Result]) -> str:
    """Returns the results as a text table, followed by each scenario's notes."""
    width = max(len(r.label) for r in results)
    header = (
        f"{'scenario':<{width}}  {'unit':<6}  {'eventkeeper':>11}  {'baseline':>10}  "
        f"{'ratio':>8}  baseline is"
    )
    rows = [
        f"{r.label:<{width}}  {r.unit:<6}  {r.ours_median:>11,.1f}  "
        f"{r.baseline_median:>10,.1f}  {r.ratio:>8,.2f}  {r.baseline_label}"
        for r in results
    ]
    lines = [header, "-" * max(len(line) for line in [header, *rows]), *rows, ""]
    lines.extend(note for r in results for note in r.notes)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark and prints the table; returns 1 when a bar fails."""
    args = parse_args(
        argv, __doc__, "admin URL of the server; scratch databases are created and dropped there"
    )
    settings = QUICK if args.quick else FULL
    contender = importlib.metadata.version("eventsourcing")
    started = time.perf_counter()
    results, server = run_all(admin_url(args.url), settings)
    elapsed = time.perf_counter() - started
    checked = check_bars({r.key: r.ratio for r in results}, BARS)
    print(
        f"Postgres {server}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"eventsourcing {contender}; {settings.rounds} rounds of {settings.duration:g} s "
        f"per side (ABAB), medians; ran {elapsed:.0f} s\n"
    )
    print(format_table(results))
    print()
    print(format_bars(checked))
    if args.json is not None:
        context = {
            "server_version": server,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "eventsourcing": contender,
            "settings": dataclasses.asdict(settings),
            "elapsed_s": elapsed,
        }
        write_json(args.json, results, checked, context)
    return 0 if all(ok for _, _, ok in checked) else 1


if __name__ == "__main__":
    sys.exit(main())
