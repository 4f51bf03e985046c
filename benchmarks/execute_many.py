"""Measures `execute_many` against psycopg's `executemany`: one upsert per parameter set.

Run ``python benchmarks/execute_many.py [--url URL] [--rows N] [--rounds R]``. In a scratch
database, each round runs ``--rows`` one-row upserts (``INSERT ... ON CONFLICT DO UPDATE``
into a table of 1,000 keys) in one transaction, once through psycopg's
``cursor.executemany`` (pipeline mode) and once through
`eventstore.postgres.pipelined.execute_many`, alternating, and records the wall time and
this process's CPU time (user + system). Prints the medians and their ratios; the final
tables must be equal. This is what `projections` runs a batch's returned writes with
(``docs/discussions/projections.md``, "Running returned writes").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import psycopg

from eventstore.postgres.pipelined import execute_many

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_URL, admin_url, scratch_database, server_version

UPSERT: Final = (
    "INSERT INTO {table} AS t (account, balance) VALUES (%s, %s) "
    "ON CONFLICT (account) DO UPDATE SET balance = t.balance + EXCLUDED.balance"
)


def measure(conn: psycopg.Connection[Any], run: Callable[[], None]) -> tuple[float, float]:
    """Runs one transaction; returns its wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    with conn.transaction():
        run()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default=os.environ.get("EVENTSTORE_DATABASE_URL") or DEFAULT_URL)
    parser.add_argument("--rows", type=int, default=1000, help="upserts per transaction")
    parser.add_argument("--rounds", type=int, default=30, help="transactions per side")
    args = parser.parse_args(argv)
    params = [(f"account-{n % 1000}", n % 200 - 50) for n in range(args.rows)]
    results: dict[str, list[tuple[float, float]]] = {"executemany": [], "execute_many": []}
    with (
        scratch_database(admin_url(args.url)) as url,
        psycopg.connect(url, autocommit=True) as conn,
    ):
        version = server_version(conn)
        for side in results:
            conn.execute(f"CREATE TABLE {side} (account text PRIMARY KEY, balance bigint)")
        many = UPSERT.format(table="executemany")
        ours = UPSERT.format(table="execute_many")

        def theirs() -> None:
            with conn.cursor() as cur:
                cur.executemany(many, params)

        for n in range(args.rounds):
            sides = [
                ("executemany", theirs),
                ("execute_many", lambda: execute_many(conn, ours, params)),
            ]
            for side, run in sides if n % 2 == 0 else reversed(sides):
                results[side].append(measure(conn, run))
        tables = [
            conn.execute(f"SELECT account, balance FROM {side} ORDER BY account").fetchall()
            for side in results
        ]
    if tables[0] != tables[1]:
        print("the two tables differ", file=sys.stderr)
        return 1
    print(
        f"Postgres {version}, {os.cpu_count()} CPUs; {args.rows:,} upserts per transaction, "
        f"{args.rounds} transactions per side (alternating), medians\n"
    )
    medians = {
        side: (statistics.median(w for w, _ in r) * 1e3, statistics.median(c for _, c in r) * 1e3)
        for side, r in results.items()
    }
    print(f"{'side':<14} {'wall ms':>8} {'CPU ms':>8}")
    for side, (wall, cpu) in medians.items():
        print(f"{side:<14} {wall:>8.2f} {cpu:>8.2f}")
    (tw, tc), (ow, oc) = medians["executemany"], medians["execute_many"]
    print(f"\nexecute_many / executemany: wall {ow / tw:.2f}x, client CPU {oc / tc:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
