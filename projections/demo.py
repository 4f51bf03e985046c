"""The bank example's read models, and the part of ``eventstore demo`` that runs them.

Two projections of the bank events (`eventstore.demo.bank`), in the schema ``bank``:

- `Balances` (``bank.balances``): the current balance of every account and how many
  deposits and withdrawals made it, one ``@handles`` handler per event type;
- `DailyTotals` (``bank.daily_totals``): what was deposited and withdrawn per day (UTC), by a
  batch handler: one ``INSERT ... ON CONFLICT`` per batch, however many events it holds.

`BankReadModels` is what this package adds to ``eventstore demo`` (through the
``eventstore.demo`` entry-point group: `eventstore` never imports `projections`). Beside
the writers it runs the projection daemon as a separate process, as it is deployed
(``eventstore projections run projections.demo:bank_v1``), shows its lag from the status
API, rebuilds ``bank.balances`` blue/green while the writers append (a second daemon runs
the next version, which builds beside the live one and switches when it has caught up; the
first daemon is then stopped, as a rolling deployment does), and at the end checks that
every read model equals a replay of the log, row for row.

Each run of the demo deploys the next version of ``bank.balances``, so it can run again on
the same database: ``projections.demo:bank_vN`` is the group with balances at version N
(a module ``__getattr__``), and the retired version's tables are dropped at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, Final

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from eventstore.demo import bank
from eventstore.events import Event, RecordedEvent
from eventstore.postgres.connections import sqlalchemy_url
from eventstore.postgres.subscriptions import SubscriptionStore
from eventstore.registry import EventRegistry
from projections.errors import ProjectionError
from projections.manager import ProjectionManager
from projections.projection import Projection, ProjectionGroup, handles
from projections.records import ProjectionStatus

__all__ = [
    "Balances",
    "BankReadModels",
    "DailyTotals",
    "balances",
    "bank_group",
    "daily_totals",
    "replay",
]

SCHEMA: Final = "bank"
metadata = sa.MetaData(schema=SCHEMA)

balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account", sa.Text, primary_key=True),  # the stream id, account-<id>
    sa.Column("balance", sa.BigInteger, nullable=False),
    sa.Column("movements", sa.Integer, nullable=False),  # deposits and withdrawals
)

daily_totals = sa.Table(
    "daily_totals",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),  # of recorded_at, in UTC
    sa.Column("deposits", sa.Integer, nullable=False),
    sa.Column("deposited", sa.BigInteger, nullable=False),
    sa.Column("withdrawals", sa.Integer, nullable=False),
    sa.Column("withdrawn", sa.BigInteger, nullable=False),
)


class Balances(Projection):
    """Keeps each account's balance, one upsert per event."""

    name = "bank.balances"
    version = 1
    tables = (balances,)
    stream_prefix = "account-"

    @handles
    def opened(self, event: RecordedEvent[bank.AccountOpened], conn: sa.Connection) -> None:
        table = self.table("balances")
        row = {"account": event.stream_id, "balance": 0, "movements": 0}
        conn.execute(insert(table).values(row).on_conflict_do_nothing())

    @handles
    def deposited(self, event: RecordedEvent[bank.MoneyDeposited], conn: sa.Connection) -> None:
        self._move(conn, event.stream_id, event.data.amount)

    @handles
    def withdrawn(self, event: RecordedEvent[bank.MoneyWithdrawn], conn: sa.Connection) -> None:
        self._move(conn, event.stream_id, -event.data.amount)

    def _move(self, conn: sa.Connection, account: str, delta: int) -> None:
        table = self.table("balances")
        statement = insert(table).values(account=account, balance=delta, movements=1)
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.account],
                set_={"balance": table.c.balance + delta, "movements": table.c.movements + 1},
            )
        )


class DailyTotals(Projection):
    """Keeps the day's deposits and withdrawals: one statement per batch of events."""

    name = "bank.daily_totals"
    version = 1
    tables = (daily_totals,)
    event_types = (bank.MoneyDeposited, bank.MoneyWithdrawn)
    stream_prefix = "account-"

    def handle_batch(
        self, events: Sequence[RecordedEvent[Event]], conn: Any, *, replay: bool
    ) -> None:
        """Sums the batch per day, then adds the sums with one ``INSERT ... ON CONFLICT``."""
        rows = totals_by_day(events)
        if not rows:
            return
        table = self.table("daily_totals")
        statement = insert(table).values(rows)
        added = statement.excluded
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[table.c.day],
                set_={c: table.c[c] + added[c] for c in _TOTALS},
            )
        )


_TOTALS: Final = ("deposits", "deposited", "withdrawals", "withdrawn")


def totals_by_day(events: Sequence[RecordedEvent[Event]]) -> list[dict[str, Any]]:
    """Returns one `daily_totals` row per day of these events, their sums."""
    days: defaultdict[dt.date, Counter[str]] = defaultdict(Counter)
    for event in events:
        day = days[event.recorded_at.astimezone(dt.UTC).date()]
        if isinstance(event.data, bank.MoneyDeposited):
            day.update(deposits=1, deposited=event.data.amount)
        elif isinstance(event.data, bank.MoneyWithdrawn):
            day.update(withdrawals=1, withdrawn=event.data.amount)
    return [{"day": day, **{c: sums[c] for c in _TOTALS}} for day, sums in sorted(days.items())]


# The groups ``eventstore projections run`` imports.

_BALANCES: dict[int, type[Balances]] = {1: Balances}


def balances_at(version: int) -> Balances:
    """Returns `Balances` at ``version``: the same handlers, as a deployment bumping it."""
    if version not in _BALANCES:
        attributes = {"version": version, "__module__": __name__}
        _BALANCES[version] = type(f"BalancesV{version}", (Balances,), attributes)
    return _BALANCES[version]()


def bank_group(balances_version: int = 1) -> ProjectionGroup:
    """Returns the bank read models, with ``bank.balances`` at ``balances_version``."""
    return ProjectionGroup(bank.registry, (balances_at(balances_version), DailyTotals()))


_GROUP_NAME: Final = re.compile(r"bank_v([1-9][0-9]{0,5})")


def __getattr__(name: str) -> ProjectionGroup:
    """Makes ``projections.demo:bank_v2`` the group with ``bank.balances`` at version 2."""
    found = _GROUP_NAME.fullmatch(name)
    if found is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return bank_group(int(found.group(1)))


# The replay the read models are checked against.

Rows = dict[Any, dict[str, Any]]


def replay(url: str, *, schema: str) -> tuple[dict[str, Rows], int]:
    """Recomputes both read models from the log (`read_all`); returns them and the count.

    Balances come from each account's aggregate (`bank.Account.from_events`), not from the
    projection's handlers: the check compares two independent computations.
    """
    kinds = (bank.AccountOpened, bank.MoneyDeposited, bank.MoneyWithdrawn)
    streams: defaultdict[str, list[RecordedEvent[Event]]] = defaultdict(list)
    read = 0
    with SubscriptionStore(url, registry=bank.registry, schema=schema, max_size=1) as store:
        for page in store.read_all(event_types=kinds, stream_prefix="account-"):
            read += len(page.events)
            for event in page.events:
                streams[event.stream_id].append(event)
    expected_balances = {
        stream: {
            "account": stream,
            "balance": bank.Account.from_events(stream, [e.data for e in events]).balance,
            "movements": sum(not isinstance(e.data, bank.AccountOpened) for e in events),
        }
        for stream, events in streams.items()
    }
    days = totals_by_day([e for events in streams.values() for e in events])
    return {"balances": expected_balances, "daily_totals": {r["day"]: r for r in days}}, read


def read_models(engine: sa.Engine) -> dict[str, Rows]:
    """Returns the rows the views (the live versions' tables) serve, by primary key."""
    with engine.connect() as conn:
        found = {
            "balances": {r["account"]: dict(r) for r in _rows(conn, balances)},
            "daily_totals": {r["day"]: dict(r) for r in _rows(conn, daily_totals)},
        }
    return found


def _rows(conn: sa.Connection, table: sa.Table) -> Iterator[sa.RowMapping]:
    return iter(conn.execute(sa.select(table)).mappings())


def differences(expected: Rows, found: Rows) -> list[str]:
    """Returns what differs between two tables' rows, by key (empty when they are equal)."""
    shown = []
    for key in sorted(expected.keys() | found.keys(), key=str):
        want, got = expected.get(key), found.get(key)
        if want != got:
            shown.append(f"{key}: replay {want}, read model {got}")
    return shown


# The demo.

_LAG_EVERY: Final = 1.0  # seconds between two lag lines
_LIVE_LINES: Final = 3  # lag lines before the rebuild, and after the switch
_READY_TIMEOUT: Final = 30.0
_REBUILD_TIMEOUT: Final = 120.0  # the log grows with each run, and each rebuild replays it
_CATCH_UP_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 15.0


class DaemonProcess:
    """Runs ``eventstore projections run TARGET`` as a child process, its output in a file.

    The URL goes through the environment, not the command line, so that its password does
    not show in ``ps``.
    """

    def __init__(self, target: str, url: str, schema: str, log: IO[bytes]) -> None:
        self.target = target
        self.command = [
            *("eventstore", "projections", "run", target),
            *("--schema", schema, "--poll-interval", "0.2", "--lease-ttl", "5"),
        ]
        self._url = url
        self._log = log
        self._process: subprocess.Popen[bytes] | None = None
        self.pid = 0

    def start(self) -> None:
        env = {**os.environ, "EVENTSTORE_DATABASE_URL": self._url}
        self._process = subprocess.Popen(
            [sys.executable, "-m", *self.command],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self._process.pid

    def check_running(self) -> None:
        """Raises when the daemon has exited (with the end of its log)."""
        if self._process is not None and self._process.poll() is not None:
            raise ProjectionError(
                f"the projection daemon ({self.target}) exited with code "
                f"{self._process.returncode}:\n{_tail(self._log)}"
            )

    def stop(self) -> tuple[float, int | None]:
        """Stops it with SIGTERM (graceful: current batches commit), SIGKILL after a deadline.

        Returns the seconds it took and its exit code (None when it had to be killed).
        """
        started = time.monotonic()
        process, self._process = self._process, None
        if process is None:
            return 0.0, 0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code: int | None = process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        return time.monotonic() - started, code


def _tail(log: IO[bytes], lines: int = 20) -> str:
    log.flush()
    text = Path(log.name).read_text(errors="replace").splitlines()
    return "\n".join(f"    {line}" for line in text[-lines:])


class BankReadModels:
    """Runs the bank read models beside the demo's writers (a `DemoExtension`)."""

    names: ClassVar[tuple[str, str]] = (Balances.name, DailyTotals.name)
    summary: ClassVar[str] = "every read model equals a replay of the log"

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self.store = SubscriptionStore(url, registry=EventRegistry(), schema=schema, max_size=2)
        self.manager = ProjectionManager(self.store)
        # The daemons' output, shown when one fails; closed (and deleted) by `stop`.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="eventstore-demo-daemons-", suffix=".log"
        )
        self.daemons: list[DaemonProcess] = []
        self.version = 1
        self.started = 0.0

    def start(self) -> None:
        """Starts the daemon of the live versions; returns once it runs them."""
        self.store.open()
        # The version a previous run left live (or building) is this run's live one.
        known = [v.version for v in self.manager.versions(Balances.name) if v.status != "retired"]
        self.version = min(known, default=1)
        self.started = time.monotonic()
        daemon = self._launch(f"projections.demo:bank_v{self.version}")
        self._until(
            lambda: self._running(Balances.name, self.version) and self._running(DailyTotals.name),
            _READY_TIMEOUT,
            "the projection daemon to run",
        )
        print(
            f"  daemon     `{' '.join(daemon.command[:4])}` (pid {daemon.pid}) runs "
            f"{Balances.name} v{self.version} and {DailyTotals.name} v1, "
            f"ready in {time.monotonic() - self.started:.1f} s"
        )

    def while_writing(self) -> None:
        """Shows the lag, rebuilds ``bank.balances`` blue/green, shows the lag again."""
        self.started = time.monotonic()
        for _ in range(_LIVE_LINES):
            self._show_lag_after(_LAG_EVERY)
        old, new = self.version, self.version + 1
        builder = self._launch(f"projections.demo:bank_v{new}")
        print(
            f"  rebuild    {Balances.name} v{new} (pid {builder.pid}, `... bank_v{new}`): "
            f"built from the start of the log beside v{old}, which serves reads"
        )
        began = time.monotonic()
        deadline = began + _REBUILD_TIMEOUT
        while self.manager.live_version(Balances.name) != new:
            if time.monotonic() > deadline:
                raise ProjectionError(f"{Balances.name} v{new} not live in {_REBUILD_TIMEOUT} s")
            self._show_lag_after(_LAG_EVERY)
        self.version = new
        print(
            f"  switched   {Balances.name} v{new} is live after {time.monotonic() - began:.1f} s, "
            f"in one transaction, the writers appending; v{old} is retired, kept until dropped"
        )
        _stop(self.daemons.pop(0), f"the v{old} daemon")
        for _ in range(_LIVE_LINES):
            self._show_lag_after(_LAG_EVERY)

    def check(self) -> bool:
        """Waits until every read model has caught up, then compares it with a replay.

        Then drops the retired versions of ``bank.balances``; returns whether every table
        equals its replay (`verify`) and no event is parked as a dead letter.
        """
        self.store.open()
        started = time.monotonic()
        for name in self.names:
            self.manager.wait_until_caught_up(name, timeout=_CATCH_UP_TIMEOUT)
        waited = time.monotonic() - started
        print(f"  caught up  both read models have handled the whole log ({waited:.2f} s wait)")
        ok = self.verify()
        dead = sum(s.dead_letters for s in self._statuses())
        print(f"  dead       {dead} dead letters")
        self._drop_retired()
        return ok and not dead

    def verify(self) -> bool:
        """Compares each read model with a replay of the log, row for row, printing each
        comparison and the first rows that differ; returns whether all are equal.

        Nothing may append meanwhile (the demo's writers have stopped): the read models are
        read first, then the log.
        """
        self.store.open()
        engine = sa.create_engine(sqlalchemy_url(self.url), pool_size=1)
        try:
            found = read_models(engine)
        finally:
            engine.dispose()
        expected, events = replay(self.url, schema=self.schema)
        ok = True
        for (table, rows), name in zip(expected.items(), self.names, strict=True):
            ok = self._compare(name, rows, found[table], events) and ok
        return ok

    def _compare(self, name: str, expected: Rows, found: Rows, events: int) -> bool:
        wrong = differences(expected, found)
        count = len(found)
        verb = "DIFFER FROM" if wrong else "equals" if count == 1 else "equal"
        print(
            f"  replay     {name} v{self.manager.live_version(name)}: {count:,} "
            f"row{'s' * (count != 1)} {verb} a replay of the log ({events:,} events)"
        )
        for line in wrong[:5]:
            print(f"               {line}")
        return not wrong

    def stop(self) -> None:
        """Stops the daemons still running (SIGTERM, then a deadline)."""
        for daemon in self.daemons:
            _stop(daemon, "the daemon")
        self.daemons.clear()
        self.store.close()
        self.log.close()

    # Helpers.

    def _launch(self, target: str) -> DaemonProcess:
        daemon = DaemonProcess(target, self.url, self.schema, self.log)
        daemon.start()
        self.daemons.append(daemon)
        return daemon

    def _statuses(self) -> list[ProjectionStatus]:
        return [
            s
            for name in self.names
            for s in self.manager.status(name)
            if s.version.status != "retired"
        ]

    def _running(self, name: str, version: int = 1) -> bool:
        found = [s for s in self.manager.status(name) if s.version.version == version]
        now = dt.datetime.now(dt.UTC)
        return bool(found and found[0].shards) and all(
            s.owner is not None and s.lease_until is not None and s.lease_until > now
            for s in found[0].shards
        )

    def _until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for daemon in self.daemons:
                daemon.check_running()
            if time.monotonic() > deadline:
                raise ProjectionError(f"waited {timeout} s for {what}:\n{_tail(self.log)}")
            time.sleep(0.05)

    def _show_lag_after(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for daemon in self.daemons:
                daemon.check_running()
            time.sleep(0.05)
        shown = " | ".join(_lag(s) for s in self._statuses())
        print(f"  lag {time.monotonic() - self.started:5.1f} s  {shown}")

    def _drop_retired(self) -> None:
        for version in self.manager.versions(Balances.name):
            if version.status == "retired":
                dropped = self.manager.drop(version.name, version.version)
                print(f"  dropped    {version.name} v{version.version}: {', '.join(dropped)}")


def _stop(daemon: DaemonProcess, label: str) -> None:
    took, code = daemon.stop()
    ended = "killed after the deadline" if code is None else f"exit {code}"
    print(f"  stopped    {label} (pid {daemon.pid}, SIGTERM): {ended} in {took:.1f} s")


def _lag(status: ProjectionStatus) -> str:
    version = status.version
    label = f"{version.name.removeprefix('bank.')} v{version.version}"
    if version.status == "building":
        return f"{label} building: {status.handled:,} done, {status.lag_events:,} to go"
    return f"{label}: {status.lag_events:,} behind ({status.lag_seconds:.2f} s)"


def extension(url: str, schema: str) -> BankReadModels:
    """Returns the demo's part for the ``eventstore.demo`` entry-point group."""
    return BankReadModels(url, schema)
