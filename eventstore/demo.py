"""The demo: concurrent writers append bank-account events, then everything is read back."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from typing import ClassVar

from eventstore import (
    NO_STREAM,
    AsyncPostgresEventStore,
    Event,
    EventMetadata,
    EventRegistry,
    PostgresEventStore,
    WrongExpectedVersionError,
)

__all__ = ["run_demo"]


class AccountOpened(Event):
    event_type: ClassVar[str] = "demo.AccountOpened"
    owner: str


class MoneyDeposited(Event):
    event_type: ClassVar[str] = "demo.MoneyDeposited"
    amount: int


class MoneyWithdrawn(Event):
    event_type: ClassVar[str] = "demo.MoneyWithdrawn"
    amount: int


REGISTRY = EventRegistry([AccountOpened, MoneyDeposited, MoneyWithdrawn])
OPERATIONS_PER_WRITER = 500


def balance(events: list[Event]) -> int:
    """Folds an account's events into its balance."""
    total = 0
    for e in events:
        if isinstance(e, MoneyDeposited):
            total += e.amount
        elif isinstance(e, MoneyWithdrawn):
            total -= e.amount
    return total


class Ledger:
    """Counts what the writers were told succeeded, to check against the log afterwards."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expected: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()

    def record(self, account: str, delta: int, conflicts: int) -> None:
        with self.lock:
            self.expected[account] += delta
            self.stats["appends"] += 1
            self.stats["conflicts"] += conflicts


def command(store: PostgresEventStore, account: str, rng: random.Random) -> tuple[int, int]:
    """Loads an account, decides, appends at the loaded version; retries on conflicts."""
    conflicts = 0
    while True:
        events = [e.data for e in store.read_stream(account)]
        amount = rng.randint(1, 100)
        current = balance(events)
        event: Event = MoneyDeposited(amount=amount)
        delta = amount
        if current >= amount and rng.random() < 0.4:
            event, delta = MoneyWithdrawn(amount=amount), -amount
        meta = EventMetadata(correlation_id=str(uuid.uuid4()), actor="demo")
        try:
            store.append(account, event, expected_version=len(events), metadata=meta)
            return delta, conflicts
        except WrongExpectedVersionError:
            conflicts += 1


def writer(store: PostgresEventStore, accounts: list[str], ledger: Ledger, seed: int) -> None:
    """Runs one writer thread's share of commands on random (often shared) accounts."""
    rng = random.Random(seed)
    for _ in range(OPERATIONS_PER_WRITER):
        account = rng.choice(accounts)
        delta, conflicts = command(store, account, rng)
        ledger.record(account, delta, conflicts)


def open_accounts(store: PostgresEventStore, accounts: list[str]) -> None:
    """Opens every account in one transaction: several streams, one atomic commit."""
    with store.transaction() as tx:
        for account in accounts:
            store.append(account, AccountOpened(owner=account), expected_version=NO_STREAM, conn=tx)


async def read_back(url: str, schema: str, accounts: list[str]) -> tuple[dict[str, int], int]:
    """Reads every account with the async store, concurrently; returns balances and count."""
    async with AsyncPostgresEventStore(url, registry=REGISTRY, schema=schema) as store:

        async def load(account: str) -> list[Event]:
            return [e.data async for e in store.read_stream(account)]

        loaded = await asyncio.gather(*(load(a) for a in accounts))
    return {a: balance(ev) for a, ev in zip(accounts, loaded, strict=True)}, sum(map(len, loaded))


def run_demo(url: str, *, schema: str, writers: int, accounts: int) -> None:
    """Runs the demo against a migrated database and prints a summary with figures."""
    run = uuid.uuid4().hex[:8]
    names = [f"demo-{run}-account-{i}" for i in range(accounts)]
    ledger = Ledger()
    with PostgresEventStore(url, registry=REGISTRY, schema=schema, max_size=writers) as store:
        open_accounts(store, names)
        started = time.perf_counter()
        threads = [
            threading.Thread(target=writer, args=(store, names, ledger, i)) for i in range(writers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        write_s = time.perf_counter() - started
    started = time.perf_counter()
    balances, read_count = asyncio.run(read_back(url, schema, names))
    read_s = time.perf_counter() - started
    appended = ledger.stats["appends"] + accounts
    ok = read_count == appended and all(balances[a] == ledger.expected[a] for a in names)
    print(f"demo run {run}: {writers} concurrent writers on {accounts} accounts")
    print(
        f"  appended   {appended:>7,} events ({ledger.stats['appends']:,} commands "
        f"in {write_s:.2f} s, {ledger.stats['appends'] / write_s:,.0f} commands/s)"
    )
    print(f"  conflicts  {ledger.stats['conflicts']:>7,} WrongExpectedVersionError, each retried")
    print(
        f"  read back  {read_count:>7,} typed events from {accounts} streams "
        f"in {read_s:.2f} s ({read_count / read_s:,.0f} events/s, async)"
    )
    print(
        f"  check      {'OK' if ok else 'MISMATCH'}: every acknowledged append is in the log, "
        "balances match"
    )
    if not ok:
        raise SystemExit(1)
