"""The ``eventstore`` command line: migrate, check and demo.

With no database configured (``--url``, ``EVENTSTORE_DATABASE_URL``, ``DATABASE_URL``), it
starts the embedded Postgres in a local data directory and says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from eventstore import migrate
from eventstore.errors import ConfigurationError, DatabaseUnavailableError, EventStoreError
from eventstore.schema import DEFAULT_SCHEMA
from eventstore.settings import database_url_from_env

__all__ = ["main"]

# 2 is argparse's exit code for bad arguments, so the checks' codes start at 3.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_NOT_MIGRATED = 4


def resolve_url(url: str | None) -> str:
    """Returns the URL to use: the argument, the environment, else the embedded server."""
    url = url or database_url_from_env()
    if url:
        return url
    from eventstore._embedded import default_data_dir, start_embedded_postgres

    print(
        f"No database configured (EVENTSTORE_DATABASE_URL): starting the embedded Postgres "
        f"in {default_data_dir()}",
        file=sys.stderr,
    )
    return start_embedded_postgres()


def cmd_migrate(args: argparse.Namespace) -> int:
    url = resolve_url(args.url)
    migrate.upgrade(url, schema=args.schema, revision=args.revision)
    current = ", ".join(sorted(migrate.current_revisions(url, schema=args.schema))) or "base"
    print(f"migrated schema {args.schema!r} to {current}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    url = resolve_url(args.url)
    try:
        current = migrate.current_revisions(url, schema=args.schema)
    except DatabaseUnavailableError as exc:
        print(f"unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    heads = migrate.head_revisions()
    if current != heads:
        shown = ", ".join(sorted(current)) or "nothing"
        print(f"not migrated: database at {shown}, code at {', '.join(sorted(heads))}")
        return EXIT_NOT_MIGRATED
    print(f"ok: database reachable, schema {args.schema!r} at {', '.join(sorted(heads))}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from eventstore.demo import run_demo

    if args.writers < 1 or args.accounts < 1:
        raise ConfigurationError("the demo needs --writers and --accounts of at least 1")
    url = resolve_url(args.url)
    migrate.upgrade(url, schema=args.schema)
    run_demo(url, schema=args.schema, writers=args.writers, accounts=args.accounts)
    return EXIT_OK


def cmd_embedded(args: argparse.Namespace) -> int:
    from eventstore._embedded import start_embedded_postgres, stop_embedded_postgres

    if args.action == "stop":
        stop_embedded_postgres()
        print("embedded Postgres stopped")
    else:
        print(start_embedded_postgres())
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventstore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", help="Postgres URL (default: $EVENTSTORE_DATABASE_URL)")
        p.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the event store")
        return p

    add("migrate", "create or upgrade the event store tables").add_argument(
        "--revision", default="heads"
    )
    add("check", "exit 0 if reachable and migrated, 3 if unreachable, 4 if behind")
    demo = add("demo", "append and read a few thousand events with concurrent writers")
    demo.add_argument("--writers", type=int, default=8)
    demo.add_argument("--accounts", type=int, default=200)
    embedded = sub.add_parser("embedded", help="start (and print the URL of) or stop it")
    embedded.add_argument("action", choices=["start", "stop"])
    return parser


COMMANDS = {
    "migrate": cmd_migrate,
    "check": cmd_check,
    "demo": cmd_demo,
    "embedded": cmd_embedded,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EventStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(exc, DatabaseUnavailableError) else EXIT_ERROR
