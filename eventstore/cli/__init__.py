"""The ``eventstore`` command line: migrate, check, inspect, and what other packages add.

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
from importlib.metadata import PackageNotFoundError, entry_points, version

from eventstore.cli import database, inspection, subscriptions
from eventstore.cli._exit import (
    EXIT_ERROR,
    EXIT_NOT_FOUND,
    EXIT_NOT_MIGRATED,
    EXIT_OK,
    EXIT_UNREACHABLE,
)
from eventstore.errors import DatabaseUnavailableError, EventStoreError, SchemaNotMigratedError

__all__ = [
    "DESCRIPTION",
    "ENTRY_POINT_GROUP",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_NOT_MIGRATED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "build_parser",
    "main",
]

ENTRY_POINT_GROUP = "eventstore.cli"
DESCRIPTION = """\
Create and check the event store's tables, inspect streams, and run subscriptions,
projections and outbox relays.

The database is --url, else $EVENTSTORE_DATABASE_URL, else $DATABASE_URL, else the
embedded Postgres (started in ./.eventstore/pgdata, or $EVENTSTORE_EMBEDDED_DIR).

Exit codes: 0 ok, 1 error, 2 bad arguments, 3 database unreachable, 4 not migrated,
5 not found."""
Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Register]:
    """Returns this package's own registrars, then every other one installed."""
    own = [database.register, inspection.register, subscriptions.register]
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


def _version() -> str:
    try:
        return version("eventkeeper")
    except PackageNotFoundError:  # pragma: no cover - a checkout without an install
        return "unknown"


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        shown = default not in (None, False, argparse.SUPPRESS) and action.option_strings
        if text and shown and "default" not in text and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


class _TopHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """The top-level help keeps its description's line breaks."""


def _with_formatter(parser: argparse.ArgumentParser) -> None:
    """Gives every subcommand parser below ``parser`` the `HelpFormatter`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.formatter_class = HelpFormatter
                _with_formatter(child)


def build_parser() -> argparse.ArgumentParser:
    """Builds the parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="eventstore",
        description=DESCRIPTION,
        formatter_class=_TopHelpFormatter,
        epilog="Run `eventstore COMMAND --help` for a command's options.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s (eventkeeper) {_version()}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _registrars():
        register(sub)
    _with_formatter(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:  # bare `eventstore`, or a command group without its subcommand
        parser.print_help()
        return EXIT_OK
    try:
        code: int = handler(args)
    except EventStoreError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return _exit_code(exc)
    return code


def _exit_code(exc: EventStoreError) -> int:
    if isinstance(exc, DatabaseUnavailableError):
        return EXIT_UNREACHABLE
    if isinstance(exc, SchemaNotMigratedError):
        return EXIT_NOT_MIGRATED
    return EXIT_ERROR


def _one_line(text: str) -> str:
    return " ".join(text.split())
