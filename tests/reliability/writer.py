"""A writer process for the subscription reliability tests.

Run as ``python -m tests.reliability.writer URL LOG --name NAME [options]``. It appends
`Ticked` events in transactions of its own: most are a psycopg transaction of the caller
(the store's ``conn=``) spanning one to three streams, with a random delay before the
commit, some roll back on purpose, and some are the store's own one-statement append.

Every outcome goes to LOG, one line per transaction, written only after the outcome is
known, so the test knows what was acknowledged:

- ``C id,id,...``: committed (acknowledged);
- ``R id,id,...``: rolled back on purpose, so these ids must never be stored;
- ``F id,id,...``: failed before the commit (a conflict): never stored either;
- ``U id,id,...``: the connection was lost; the outcome is unknown (the commit may or may
  not have happened): the test checks only that it is handled iff stored.

``--hold`` makes the long transaction instead: it appends, prints ``open XID POSITION``
(its transaction id and the highest position it drew), waits for a line on stdin while
the transaction stays open, appends again, commits, and prints ``committed``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from pathlib import Path
from typing import IO

import psycopg

from eventstore import (
    DatabaseUnavailableError,
    PostgresEventStore,
    TransactionConflictError,
)
from tests.reliability.subscriber_app import Ticked, make_registry

SHARED_STREAMS = 24


class _RollBack(Exception):
    """Raised inside a transaction to roll it back on purpose."""


def _events(name: str, txn: int, count: int) -> list[Ticked]:
    return [Ticked(writer=name, txn=txn, n=n) for n in range(count)]


class Writer:
    def __init__(self, args: argparse.Namespace, log: IO[str]) -> None:
        self.args = args
        self.log = log
        self.rng = random.Random(args.seed)
        self.store = PostgresEventStore(
            args.url, registry=make_registry(), max_size=1, connect_timeout=2
        )
        self.conn: psycopg.Connection | None = None
        self.committed = 0

    def connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.args.url, connect_timeout=2)
        return self.conn

    def record(self, outcome: str, ids: list[uuid.UUID]) -> None:
        self.log.write(f"{outcome} {','.join(map(str, ids))}\n")
        self.log.flush()
        if outcome == "C":
            self.committed += len(ids)

    def streams(self) -> list[str]:
        count = self.rng.randint(1, 3)
        names = {
            f"shared-{self.rng.randrange(SHARED_STREAMS)}"
            if self.rng.random() < 0.5
            else f"{self.args.name}-{self.rng.randrange(8)}"
            for _ in range(count)
        }
        # One lock order for every writer: transactions spanning shared streams never
        # deadlock on the stream rows.
        return sorted(names)

    def one(self, txn: int) -> None:
        """Runs one transaction and records its outcome."""
        ids: list[uuid.UUID] = []
        if self.rng.random() < 0.2:
            stream = self.streams()[0]
            events = _events(self.args.name, txn, self.rng.randint(1, 3))
            ids = [uuid.uuid4() for _ in events]
            try:
                # The store's own retries repeat the same ids: idempotent.
                self.store.append(stream, events, event_ids=ids)
            except DatabaseUnavailableError:
                self.record("U", ids)
                return
            self.record("C", ids)
            return
        rollback = self.rng.random() < self.args.rollback
        try:
            conn = self.connection()
            with conn.transaction():
                for stream in self.streams():
                    events = _events(self.args.name, txn, self.rng.randint(1, 3))
                    some = [uuid.uuid4() for _ in events]
                    ids.extend(some)
                    self.store.append(stream, events, event_ids=some, conn=conn)
                # The commit waits: transactions commit out of position order.
                time.sleep(self.rng.uniform(0, self.args.delay))
                if rollback:
                    raise _RollBack
        except _RollBack:
            self.record("R", ids)
            return
        except TransactionConflictError:
            self.record("F", ids)
            return
        except (DatabaseUnavailableError, psycopg.OperationalError):
            if not self.args.tolerate_outage:
                raise
            self.record("U", ids)
            self.reconnect()
            return
        self.record("C", ids)

    def reconnect(self) -> None:
        """Waits for the database to answer again (the outage is the test's doing)."""
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        deadline = time.monotonic() + 120
        while True:
            try:
                self.connection()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def done(self, txn: int) -> bool:
        if self.args.events is not None and self.committed >= self.args.events:
            return True
        return self.args.until is not None and Path(self.args.until).exists()

    def run(self) -> None:
        txn = 0
        while not self.done(txn):
            self.one(txn)
            txn += 1

    def hold(self) -> None:
        """The long transaction: appends, stays open until told, appends again, commits."""
        conn = self.connection()
        stream = f"{self.args.name}-long"
        with conn.transaction():
            first = _events(self.args.name, 0, 5)
            first_ids = [uuid.uuid4() for _ in first]
            result = self.store.append(stream, first, event_ids=first_ids, conn=conn)
            print(f"open {result.transaction_id} {max(result.positions)}", flush=True)
            sys.stdin.readline()
            last = _events(self.args.name, 1, 5)
            last_ids = [uuid.uuid4() for _ in last]
            self.store.append(stream, last, event_ids=last_ids, conn=conn)
        self.record("C", first_ids + last_ids)
        print("committed", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("log")
    parser.add_argument("--name", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--events", type=int, help="stop after this many committed events")
    parser.add_argument("--until", help="stop once this file exists")
    parser.add_argument("--rollback", type=float, default=0.1)
    parser.add_argument("--delay", type=float, default=0.01, help="max seconds before commit")
    parser.add_argument("--tolerate-outage", action="store_true")
    parser.add_argument("--hold", action="store_true", help="be the long transaction")
    args = parser.parse_args()
    with open(args.log, "a") as log:
        writer = Writer(args, log)
        try:
            writer.hold() if args.hold else writer.run()
        finally:
            if writer.conn is not None:
                writer.conn.close()
            writer.store.close()


if __name__ == "__main__":
    main()
