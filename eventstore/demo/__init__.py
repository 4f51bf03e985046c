"""The demo: concurrent writers run bank-account commands through the repository.

It uses the example domain (`eventstore.demo.bank`), then reads everything back with the
async store and checks that every acknowledged command is in the log.

Other installed packages add parts to it through the ``eventstore.demo`` entry-point group,
as they add subcommands through ``eventstore.cli``: each entry point names a factory
``factory(url, schema)`` returning a `DemoExtension`, which runs beside the writers and
checks its own results at the end. `projections` adds the bank read models that way
(`projections.demo`), so this package never imports it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Final, Protocol

from eventstore import (
    AsyncPostgresEventStore,
    ConfigurationError,
    Event,
    PostgresEventStore,
    Repository,
    message_context,
)
from eventstore.demo import bank

__all__ = ["EXTENSION_GROUP", "DemoExtension", "run_demo"]

COMMANDS_PER_WRITER = 500
EXTENSION_GROUP: Final = "eventstore.demo"
# While an extension runs beside them, the writers keep a steady pace once past their
# COMMANDS_PER_WRITER (this many commands per second each), so the log stays demo-sized.
PACED_COMMANDS_PER_SECOND: Final = 40.0


class DemoExtension(Protocol):
    """Runs beside the demo's writers and checks its own results (see the module docstring).

    The demo calls `start` before it opens the accounts, `while_writing` while the writers
    append (they keep appending until it returns), `check` once they have stopped, and
    `stop` last, always, even after an error (and when `start` failed or never ran).
    """

    summary: str  # what its check tells when it passes, for the demo's last line

    def start(self) -> None:
        """Starts what runs beside the writers (a daemon), once it is ready."""

    def while_writing(self) -> None:
        """Shows and does what happens while the writers append; returns when done."""

    def check(self) -> bool:
        """Checks the extension's results, printing them; returns whether they hold."""

    def stop(self) -> None:
        """Stops what `start` started (gracefully, with a deadline)."""


ExtensionFactory = Callable[[str, str], DemoExtension]


def installed_extensions() -> list[tuple[str, ExtensionFactory]]:
    """Returns the factories of the ``eventstore.demo`` entry-point group, by name."""
    points = sorted(entry_points(group=EXTENSION_GROUP), key=lambda p: p.name)
    return [(point.name, point.load()) for point in points]


class Ledger:
    """Counts what the writers were told succeeded, to check against the log afterwards."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self.lock:
            self.stats[key] += amount

    def credit(self, account: str, delta: int) -> None:
        with self.lock:
            self.expected[account] += delta


def one_command(
    repo: Repository[bank.Account], account: str, rng: random.Random, ledger: Ledger
) -> None:
    """Deposits or withdraws through `Repository.update`, which retries on conflicts."""
    amount = rng.randint(1, 100)
    withdraw = rng.random() < 0.4

    def command(a: bank.Account) -> None:
        ledger.add("attempts")
        a.withdraw(amount) if withdraw else a.deposit(amount)

    with message_context(correlation_id=str(uuid.uuid4()), actor="demo"):
        try:
            repo.update(account, command)
        except bank.InsufficientFunds:
            ledger.add("refused")
            return
    ledger.add("commands")
    ledger.credit(account, -amount if withdraw else amount)


def writer(
    repo: Repository[bank.Account],
    accounts: list[str],
    ledger: Ledger,
    seed: int,
    keep_writing: threading.Event,
) -> None:
    """Runs one writer thread's share of commands on random, often shared, accounts.

    It runs `COMMANDS_PER_WRITER` commands at full speed, then carries on at a steady pace
    while ``keep_writing`` is set (an extension is still at work beside the writers).
    """
    rng = random.Random(seed)
    try:
        for _ in range(COMMANDS_PER_WRITER):
            one_command(repo, rng.choice(accounts), rng, ledger)
        while keep_writing.is_set():
            one_command(repo, rng.choice(accounts), rng, ledger)
            time.sleep(1 / PACED_COMMANDS_PER_SECOND)
    except Exception as exc:  # reported by the check instead of dying silently in a thread
        ledger.add("writer errors")
        print(f"writer {seed} failed: {exc!r}")


def open_accounts(
    store: PostgresEventStore, repo: Repository[bank.Account], ids: list[str]
) -> None:
    """Opens every account in one transaction: many streams, one atomic commit."""
    with store.transaction() as tx:
        for account_id in ids:
            account = bank.Account.blank(account_id)
            account.open(owner=f"owner of {account_id}")
            repo.save(account, conn=tx)


async def read_back(url: str, schema: str, streams: list[str]) -> tuple[dict[str, int], int]:
    """Reads every account with the async store, concurrently; returns balances and count."""
    async with AsyncPostgresEventStore(url, registry=bank.registry, schema=schema) as store:

        async def load(stream_id: str) -> list[Event]:
            return [e.data async for e in store.read_stream(stream_id)]

        loaded = await asyncio.gather(*(load(s) for s in streams))
    balances = {}
    for stream_id, events in zip(streams, loaded, strict=True):
        balances[stream_id] = bank.Account.from_events("x", events).balance
    return balances, sum(map(len, loaded))


def run_demo(
    url: str,
    *,
    schema: str,
    writers: int,
    accounts: int,
    extensions: Sequence[tuple[str, ExtensionFactory]] | None = None,
) -> None:
    """Runs the demo against a migrated database and prints a summary with figures.

    ``extensions`` run beside the writers: by default every one installed (the
    ``eventstore.demo`` entry-point group), none with an empty sequence. Raises
    ``SystemExit(1)`` after the summary when a check fails.
    """
    if writers < 1 or accounts < 1:
        raise ConfigurationError("the demo needs at least one writer and one account")
    found = installed_extensions() if extensions is None else list(extensions)
    run = uuid.uuid4().hex[:8]
    print(f"demo run {run}: {writers} concurrent writers on {accounts} bank accounts")
    parts: list[DemoExtension] = []
    try:
        for _, factory in found:
            parts.append(factory(url, schema))
            parts[-1].start()
        ok = write_and_check(url, schema, writers, accounts, run, parts)
        for part in parts:
            ok = part.check() and ok
    finally:
        for part in reversed(parts):
            part.stop()
    claims = ["every acknowledged command is in the log", *(p.summary for p in parts)]
    print(f"{'PASS' if ok else 'FAIL'}: {'; '.join(claims)}{'' if ok else ': NOT SO'}")
    if not ok:
        raise SystemExit(1)


def write_and_check(
    url: str, schema: str, writers: int, accounts: int, run: str, parts: list[DemoExtension]
) -> bool:
    """Runs the writers (and the extensions beside them), reads back; returns the check."""
    ids = [f"demo-{run}-{i}" for i in range(accounts)]
    ledger = Ledger()
    keep_writing = threading.Event()
    if parts:
        keep_writing.set()
    with PostgresEventStore(url, registry=bank.registry, schema=schema, max_size=writers) as store:
        repo = Repository(store, bank.Account, snapshot_every=50, attempts=50)
        open_accounts(store, repo, ids)
        started = time.perf_counter()
        threads = [
            threading.Thread(target=writer, args=(repo, ids, ledger, i, keep_writing))
            for i in range(writers)
        ]
        for t in threads:
            t.start()
        try:
            for part in parts:
                part.while_writing()
        finally:  # an extension that fails stops the writers too
            keep_writing.clear()
            for t in threads:
                t.join()
        write_s = time.perf_counter() - started
        streams = [repo.stream_id_for(i) for i in ids]
    started = time.perf_counter()
    balances, read_count = asyncio.run(read_back(url, schema, streams))
    read_s = time.perf_counter() - started
    return report(ledger, writers, accounts, write_s, read_s, balances, read_count, streams, ids)


def report(
    ledger: Ledger,
    writers: int,
    accounts: int,
    write_s: float,
    read_s: float,
    balances: dict[str, int],
    read_count: int,
    streams: list[str],
    ids: list[str],
) -> bool:
    """Prints the summary; returns whether the log agrees with the acknowledgements."""
    stats = ledger.stats
    appended = stats["commands"] + accounts
    ok = (
        not stats["writer errors"]
        and read_count == appended
        and all(balances[s] == ledger.expected[i] for s, i in zip(streams, ids, strict=True))
    )
    retries = stats["attempts"] - stats["commands"] - stats["refused"]
    print(
        f"  commands   {stats['commands']:>7,} through Repository.update in {write_s:.2f} s "
        f"({stats['commands'] / write_s:,.0f} commands/s)"
    )
    print(f"  retries    {retries:>7,} after WrongExpectedVersionError (reload, rerun, save)")
    print(f"  refused    {stats['refused']:>7,} withdrawals (InsufficientFunds): nothing written")
    print(
        f"  read back  {read_count:>7,} typed events from {accounts} streams "
        f"in {read_s:.2f} s ({read_count / read_s:,.0f} events/s, async)"
    )
    print(
        f"  check      {'OK' if ok else 'MISMATCH'}: every acknowledged append is in the log, "
        "balances match"
    )
    return ok
