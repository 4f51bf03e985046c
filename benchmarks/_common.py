"""Holds the helpers every benchmark script shares: scratch databases, threads, output.

The scripts import it as ``_common``: running ``python benchmarks/NAME.py`` puts this folder
first on ``sys.path``.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/postgres"

Step = Callable[[], int]
"""Performs one operation (a transaction, a load, a command) and returns the units it did."""


def run_steps(steps: Sequence[Step], duration: float) -> tuple[int, float]:
    """Runs each step in its own thread until ``duration`` passes; returns units, seconds.

    The threads start together behind a barrier; the elapsed time runs from the barrier
    to the end of the last thread's last operation.
    """
    counts = [0] * len(steps)
    ends = [0.0] * len(steps)
    errors: list[BaseException] = []
    start = [0.0]

    def begin() -> None:
        start[0] = time.perf_counter()

    barrier = threading.Barrier(len(steps), action=begin)

    def work(index: int) -> None:
        try:
            barrier.wait()
            deadline = start[0] + duration
            while time.perf_counter() < deadline:
                counts[index] += steps[index]()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            ends[index] = time.perf_counter()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(steps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(counts), max(ends) - start[0]


def plural(count: int, word: str) -> str:
    """Returns ``count word`` with an ``s`` unless the count is one."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def admin_url(url: str) -> str:
    """Returns a libpq URL: a SQLAlchemy ``postgresql+driver://`` scheme loses its driver."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=parts.scheme.split("+", 1)[0]))


def database_url(url: str, name: str) -> str:
    """Returns ``url`` pointing at database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """Creates a ``bench_<random>`` database, yields its URL and drops it afterwards."""
    name = f"bench_{secrets.token_hex(4)}"
    ident = sql.Identifier(name)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield database_url(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def server_version(conn: psycopg.Connection[Any]) -> str:
    """Returns the server's version string."""
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


def progress(message: str) -> None:
    """Writes a progress line to stderr, keeping stdout for the results."""
    print(message, file=sys.stderr, flush=True)
