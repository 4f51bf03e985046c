"""The demo: concurrent writers run bank-account commands through the repository.

It uses the example domain (`eventstore.demo.bank`), then reads everything back with the
async store and checks that every acknowledged command is in the log.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter

from eventstore import (
    AsyncPostgresEventStore,
    ConfigurationError,
    Event,
    PostgresEventStore,
    Repository,
    message_context,
)
from eventstore.demo import bank

__all__ = ["run_demo"]

COMMANDS_PER_WRITER = 500


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


def writer(repo: Repository[bank.Account], accounts: list[str], ledger: Ledger, seed: int) -> None:
    """Runs one writer thread's share of commands on random, often shared, accounts."""
    rng = random.Random(seed)
    try:
        for _ in range(COMMANDS_PER_WRITER):
            one_command(repo, rng.choice(accounts), rng, ledger)
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


def run_demo(url: str, *, schema: str, writers: int, accounts: int) -> None:
    """Runs the demo against a migrated database and prints a summary with figures."""
    if writers < 1 or accounts < 1:
        raise ConfigurationError("the demo needs at least one writer and one account")
    run = uuid.uuid4().hex[:8]
    ids = [f"demo-{run}-{i}" for i in range(accounts)]
    ledger = Ledger()
    with PostgresEventStore(url, registry=bank.registry, schema=schema, max_size=writers) as store:
        repo = Repository(store, bank.Account, snapshot_every=50, attempts=50)
        open_accounts(store, repo, ids)
        started = time.perf_counter()
        threads = [
            threading.Thread(target=writer, args=(repo, ids, ledger, i)) for i in range(writers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        write_s = time.perf_counter() - started
        streams = [repo.stream_id_for(i) for i in ids]
    started = time.perf_counter()
    balances, read_count = asyncio.run(read_back(url, schema, streams))
    read_s = time.perf_counter() - started
    report(ledger, writers, accounts, write_s, read_s, balances, read_count, run, streams, ids)


def report(
    ledger: Ledger,
    writers: int,
    accounts: int,
    write_s: float,
    read_s: float,
    balances: dict[str, int],
    read_count: int,
    run: str,
    streams: list[str],
    ids: list[str],
) -> None:
    """Prints the summary and fails when the log disagrees with the acknowledgements."""
    stats = ledger.stats
    appended = stats["commands"] + accounts
    ok = (
        not stats["writer errors"]
        and read_count == appended
        and all(balances[s] == ledger.expected[i] for s, i in zip(streams, ids, strict=True))
    )
    retries = stats["attempts"] - stats["commands"] - stats["refused"]
    print(f"demo run {run}: {writers} concurrent writers on {accounts} bank accounts")
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
    if not ok:
        raise SystemExit(1)
