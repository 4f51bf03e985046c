"""The database subcommands: migrate, check, demo, grants and the embedded server.

`eventstore.migrate` (alembic, SQLAlchemy) is imported by the handlers, not here, so that
``eventstore --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from eventstore.cli._exit import EXIT_NOT_MIGRATED, EXIT_OK, EXIT_UNREACHABLE
from eventstore.errors import ConfigurationError, DatabaseUnavailableError
from eventstore.postgres.schema import DEFAULT_SCHEMA
from eventstore.settings import Settings

if TYPE_CHECKING:
    from eventstore.migrate import VersionRecord

__all__ = ["add_database_options", "register", "resolve_url"]


def resolve_url(url: str | None) -> str:
    """Returns the URL to use: the argument, the environment, else the embedded server.

    A URL that is not a well-formed Postgres URL is a `ConfigurationError` that shows it
    (password masked).
    """
    from eventstore.postgres.connections import libpq_url

    url = url or Settings.from_env().database_url
    if url:
        libpq_url(url)  # raises ConfigurationError on a malformed URL
        return url
    from eventstore.postgres.embedded import default_data_dir, start_embedded_postgres

    print(
        f"No database configured (EVENTSTORE_DATABASE_URL): starting the embedded Postgres "
        f"in {default_data_dir()}",
        file=sys.stderr,
    )
    return start_embedded_postgres()


def cmd_migrate(args: argparse.Namespace) -> int:
    from eventstore import migrate

    url = resolve_url(args.url)
    before = migrate.current_revisions(url, schema=args.schema)
    migrate.upgrade(url, schema=args.schema, revision=args.revision)
    after = migrate.current_revisions(url, schema=args.schema)
    shown = ", ".join(sorted(after)) or "base"
    if after == before:
        print(f"already at {shown}: schema {args.schema!r} unchanged")
    else:
        print(f"migrated schema {args.schema!r} to {shown}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from eventstore import migrate

    url = resolve_url(args.url)
    try:
        if args.alembic_ini is not None:
            current = migrate.tree_revisions(args.alembic_ini, url if args.url else None)
            where = f"by the alembic tree of {args.alembic_ini}"
        else:
            record = migrate.find_versions(
                url, schema=args.schema, version_table=args.version_table
            )
            current, where = set(record.revisions), _where(record)
    except DatabaseUnavailableError as exc:
        print(f"unreachable: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_UNREACHABLE
    heads = migrate.head_revisions()
    if current != heads:
        shown = ", ".join(sorted(current)) or "nothing"
        print(f"not migrated: database at {shown}, code at {', '.join(sorted(heads))}")
        return EXIT_NOT_MIGRATED
    print(f"ok: database reachable, schema {args.schema!r} at {', '.join(sorted(heads))} ({where})")
    return EXIT_OK


def _where(record: VersionRecord) -> str:
    if record.standalone:
        return f"recorded in {record.table}"
    return f"recorded in {record.table} by an alembic tree"


def cmd_demo(args: argparse.Namespace) -> int:
    from eventstore import migrate
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
    from eventstore import migrate

    if args.apply:
        statements = migrate.grant(resolve_url(args.url), args.role, schema=args.schema)
    else:
        statements = migrate.grant_statements(args.role, schema=args.schema)
    print(";\n".join(statements) + ";")
    return EXIT_OK


def add_database_options(parser: argparse.ArgumentParser) -> None:
    """Adds ``--url`` and ``--schema``, which every database command takes."""
    parser.add_argument(
        "--url",
        help="Postgres URL, postgresql://user:password@host:port/database "
        "(default: $EVENTSTORE_DATABASE_URL, then $DATABASE_URL, then the embedded server)",
    )
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the event store")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the database subcommands to the ``eventstore`` parser."""

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=description)
        add_database_options(p)
        return p

    migrate_ = add(
        "migrate",
        "create or upgrade the event store tables",
        "Creates or upgrades the event store's tables, recording the revisions in "
        "SCHEMA.alembic_version. Refuses (exit 1) when an application's alembic tree "
        "records them: run `alembic upgrade heads` there instead.",
    )
    migrate_.add_argument("--revision", default="heads", help="the alembic revision to reach")
    migrate_.set_defaults(handler=cmd_migrate)
    check = add(
        "check",
        "exit 0 if reachable and migrated, 3 if unreachable, 4 if behind",
        "Tells by its exit code whether the database answers (else 3) and is at the "
        "shipped revisions (else 4). The revisions are looked for in SCHEMA.alembic_version, "
        "then in any other alembic version table (an application's tree).",
    )
    check.add_argument(
        "--version-table",
        help="read the revisions from this table only, e.g. public.alembic_version",
    )
    check.add_argument(
        "--alembic-ini",
        help="ask the application's alembic tree (runs its env.py, changing nothing)",
    )
    check.set_defaults(handler=cmd_check)
    demo = add(
        "demo",
        "append and read a few thousand events with concurrent writers",
        "Migrates the database, then runs the bank demo with concurrent writers and checks "
        "that every acknowledged append is in the log. Installed packages run parts beside "
        "the writers (the eventstore.demo entry-point group): projections runs the bank read "
        "models in a daemon process, shows its lag, rebuilds one blue/green, and checks each "
        "against a replay of the log. Exit 1 when a check fails.",
    )
    demo.add_argument("--writers", type=int, default=8, help="concurrent writer threads")
    demo.add_argument("--accounts", type=int, default=200, help="bank accounts to open")
    demo.set_defaults(handler=cmd_demo)
    grants = add(
        "grants",
        "print (or --apply) the GRANTs an application role needs",
        "Prints the GRANT statements an application role needs (append, read, "
        "subscriptions; never UPDATE or DELETE on events), or runs them with --apply.",
    )
    grants.add_argument("role", help="the role the application connects as")
    grants.add_argument("--apply", action="store_true", help="run them (as the schema's owner)")
    grants.set_defaults(handler=cmd_grants)
    embedded = sub.add_parser(
        "embedded",
        help="start (and print the URL of) or stop the embedded server",
        description="Starts the embedded Postgres (printing its URL) or stops it; its data "
        "lives in $EVENTSTORE_EMBEDDED_DIR, default ./.eventstore/pgdata.",
    )
    embedded.add_argument("action", choices=["start", "stop"], help="start or stop")
    embedded.set_defaults(handler=cmd_embedded)
