"""The ``eventstore`` command line: migrate, check, demo, and what other packages add.

Subcommands come from the ``eventstore.cli`` entry-point group: each entry point names a
``register(subparsers)`` function that adds its parsers with ``set_defaults(handler=...)``.
The database commands are this package's own (`eventstore.cli.database`); `projections`
and `outbox` add theirs the same way, so `eventstore` never imports them.

With no database configured (``--url``, ``EVENTSTORE_DATABASE_URL``, ``DATABASE_URL``), the
database commands start the embedded Postgres in a local data directory and say so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from eventstore.cli import database, subscriptions
from eventstore.cli._exit import EXIT_ERROR, EXIT_NOT_MIGRATED, EXIT_OK, EXIT_UNREACHABLE
from eventstore.errors import DatabaseUnavailableError, EventStoreError

__all__ = [
    "ENTRY_POINT_GROUP",
    "EXIT_ERROR",
    "EXIT_NOT_MIGRATED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "build_parser",
    "main",
]

ENTRY_POINT_GROUP = "eventstore.cli"
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Register]:
    """Returns this package's own registrars, then every other one installed."""
    own = [database.register, subscriptions.register]
    found: list[Register] = list(own)
    names = {f"{r.__module__}:register" for r in own}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        if point.value in names:
            continue
        try:
            found.append(point.load())
        except Exception as exc:  # a broken add-on must not take `migrate` down with it
            print(
                f"eventstore: the {point.name!r} commands are unavailable: {exc}",
                file=sys.stderr,
            )
    return found


def build_parser() -> argparse.ArgumentParser:
    """Builds the parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="eventstore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for register in _registrars():
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except EventStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(exc, DatabaseUnavailableError) else EXIT_ERROR
    return code
