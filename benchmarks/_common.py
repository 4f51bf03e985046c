"""Holds the helpers every benchmark script shares: scratch databases, threads, output.

The scripts import it as ``_common``: running ``python benchmarks/NAME.py`` puts this folder
first on ``sys.path``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final, Protocol
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


@dataclasses.dataclass(frozen=True, slots=True)
class Bar:
    """States a minimum ratio (ours over the baseline) that one scenario must reach."""

    key: str
    minimum: float
    label: str


Checked = tuple[Bar, float, bool]
"""A bar, the ratio measured for its scenario and whether the ratio reached the bar."""


class JsonResult(Protocol):
    """Is a scenario's result that can describe itself as JSON-ready data."""

    def as_dict(self) -> dict[str, Any]:
        """Returns the result as JSON-ready data."""
        ...


def check_bars(ratios: Mapping[str, float], bars: Sequence[Bar]) -> list[Checked]:
    """Returns each bar with its measured ratio, looked up by key, and whether it passed."""
    return [(bar, ratios[bar.key], ratios[bar.key] >= bar.minimum) for bar in bars]


def format_bars(checked: Sequence[Checked]) -> str:
    """Returns one PASS/FAIL line per bar."""
    return "\n".join(
        f"{'PASS' if ok else 'FAIL'}  {bar.label}: ratio {ratio:.2f} (bar >= {bar.minimum:.2f})"
        for bar, ratio, ok in checked
    )


def write_json(
    path: Path,
    results: Sequence[JsonResult],
    checked: Sequence[Checked],
    context: dict[str, Any],
) -> None:
    """Writes settings, every round and the bars to ``path`` as JSON."""
    document = {
        **context,
        "results": [r.as_dict() for r in results],
        "bars": [
            {"key": bar.key, "label": bar.label, "minimum": bar.minimum, "ratio": ratio, "ok": ok}
            for bar, ratio, ok in checked
        ],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def parse_args(argv: Sequence[str] | None, doc: str | None, url_help: str) -> argparse.Namespace:
    """Parses ``--url``, ``--quick`` and ``--json``; the first line of ``doc`` describes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument(
        "--url",
        default=os.environ.get("EVENTSTORE_DATABASE_URL") or DEFAULT_URL,
        help=url_help,
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write results here")
    return parser.parse_args(argv)


def settle(url: str) -> None:
    """Checkpoints the server before a round, so that no round pays for the dirty pages and
    WAL the rounds before it left (a checkpoint spread over a round slows its commits).
    Skipped without the privilege (``pg_checkpoint`` or a superuser)."""
    with (
        psycopg.connect(url, autocommit=True) as conn,
        suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")
