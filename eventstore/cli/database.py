"""The database subcommands: migrate, check, demo and the embedded server."""

from __future__ import annotations

import argparse
import sys

from eventstore import migrate
from eventstore.cli._exit import EXIT_NOT_MIGRATED, EXIT_OK, EXIT_UNREACHABLE
from eventstore.errors import ConfigurationError, DatabaseUnavailableError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.settings import Settings

__all__ = ["register", "resolve_url"]


def resolve_url(url: str | None) -> str:
    """Returns the URL to use: the argument, the environment, else the embedded server."""
    url = url or Settings.from_env().database_url
    if url:
        return url
    from eventstore.postgres.embedded import default_data_dir, start_embedded_postgres

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
    from eventstore.postgres.embedded import start_embedded_postgres, stop_embedded_postgres

    if args.action == "stop":
        stop_embedded_postgres()
        print("embedded Postgres stopped")
    else:
        print(start_embedded_postgres())
    return EXIT_OK


def cmd_grants(args: argparse.Namespace) -> int:
    if args.apply:
        statements = migrate.grant(resolve_url(args.url), args.role, schema=args.schema)
    else:
        statements = migrate.grant_statements(args.role, schema=args.schema)
    print(";\n".join(statements) + ";")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the database subcommands to the ``eventstore`` parser."""

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", help="Postgres URL (default: $EVENTSTORE_DATABASE_URL)")
        p.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the event store")
        return p

    migrate_ = add("migrate", "create or upgrade the event store tables")
    migrate_.add_argument("--revision", default="heads")
    migrate_.set_defaults(handler=cmd_migrate)
    add("check", "exit 0 if reachable and migrated, 3 if unreachable, 4 if behind").set_defaults(
        handler=cmd_check
    )
    demo = add("demo", "append and read a few thousand events with concurrent writers")
    demo.add_argument("--writers", type=int, default=8)
    demo.add_argument("--accounts", type=int, default=200)
    demo.set_defaults(handler=cmd_demo)
    grants = add("grants", "print (or --apply) the GRANTs an application role needs")
    grants.add_argument("role", help="the role the application connects as")
    grants.add_argument("--apply", action="store_true", help="run them (as the schema's owner)")
    grants.set_defaults(handler=cmd_grants)
    embedded = sub.add_parser("embedded", help="start (and print the URL of) or stop it")
    embedded.add_argument("action", choices=["start", "stop"])
    embedded.set_defaults(handler=cmd_embedded)
