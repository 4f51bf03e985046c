"""Runs the shipped alembic migrations, standalone or from a user's own alembic tree.

The revisions live in the repository's ``migrations/`` folder, which the wheel carries as
``eventstore/_migrations``. They keep their own version table inside the event store's
schema, under the branch label ``eventstore``, so they never touch an application's
``alembic_version``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from eventstore._append import validate_schema
from eventstore.errors import ConfigurationError, DatabaseUnavailableError
from eventstore.postgres.connections import sqlalchemy_url
from eventstore.postgres.schema import DEFAULT_SCHEMA, VERSION_TABLE
from eventstore.settings import Settings

__all__ = [
    "BRANCH_LABEL",
    "alembic_config",
    "current_revisions",
    "downgrade",
    "head_revisions",
    "is_up_to_date",
    "migration_schema",
    "migrations_dir",
    "upgrade",
    "versions_dir",
]

BRANCH_LABEL: Final = "eventstore"
SCHEMA_ATTRIBUTE: Final = "eventstore_schema"


def migrations_dir() -> Path:
    """Returns the folder holding ``env.py`` and ``versions/``, installed or in a checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"the migrations are missing next to {package}")


def versions_dir() -> Path:
    """Returns the folder of revision files, for a user's ``version_locations``."""
    return migrations_dir() / "versions"


def migration_schema(config: Config | None = None) -> str:
    """Returns the schema the revisions create: config attribute, ``-x``, env, default.

    Whichever source names it, the name is checked the way the store checks it.
    """
    return validate_schema(_configured_schema(config))


def _configured_schema(config: Config | None) -> str:
    if config is not None:
        value = config.attributes.get(SCHEMA_ATTRIBUTE)
        if value:
            return str(value)
        ini_option = config.get_section_option(config.config_ini_section, "eventstore_schema")
        if ini_option:
            return ini_option
    try:
        from alembic import context

        x = context.get_x_argument(as_dictionary=True).get("eventstore_schema")
        if x:
            return str(x)
    except (AttributeError, NameError):
        pass
    return Settings.from_env().schema or DEFAULT_SCHEMA


def alembic_config(url: str, schema: str = DEFAULT_SCHEMA) -> Config:
    """Builds an alembic config for the shipped migrations against ``url``."""
    schema = validate_schema(schema)  # "" never falls back to $EVENTSTORE_SCHEMA
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    config.attributes[SCHEMA_ATTRIBUTE] = schema
    return config


def upgrade(url: str, schema: str = DEFAULT_SCHEMA, revision: str = "heads") -> None:
    """Migrates the database up to ``revision`` (all heads by default)."""
    with _reachable(url), _known_revision(revision):
        command.upgrade(alembic_config(url, schema), revision)


def downgrade(url: str, revision: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Migrates the database down to ``revision`` (``base`` removes everything)."""
    with _reachable(url), _known_revision(revision):
        command.downgrade(alembic_config(url, schema), revision)


@contextmanager
def _known_revision(revision: str) -> Iterator[None]:
    try:
        yield
    except CommandError as exc:
        raise ConfigurationError(f"cannot migrate to {revision!r}: {exc}") from exc


def head_revisions() -> set[str]:
    """Returns the revisions the shipped migrations end at."""
    script = ScriptDirectory(str(migrations_dir()))
    return set(script.get_heads())


def current_revisions(url: str, schema: str = DEFAULT_SCHEMA) -> set[str]:
    """Returns the revisions the database is at (empty when never migrated)."""
    schema = validate_schema(schema)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with _reachable(url), engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
            )
            return set(context.get_current_heads())
    finally:
        engine.dispose()


def is_up_to_date(url: str, schema: str = DEFAULT_SCHEMA) -> bool:
    """Tells whether the database is migrated to the shipped heads."""
    return current_revisions(url, schema) == head_revisions()


@contextmanager
def _reachable(url: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailableError(f"database unavailable: {exc.orig}") from exc


# What the application role needs, table by table: appending and reading events,
# claiming stream versions, snapshots, and running subscriptions (checkpoints, leases,
# dead letters), projections and the inbox. Never UPDATE, DELETE or TRUNCATE on events.
_APP_PRIVILEGES: Final = (
    ("SELECT, INSERT", ("events",)),
    ("SELECT, INSERT, UPDATE", ("streams",)),
    ("SELECT, INSERT, UPDATE, DELETE", ("snapshots", "checkpoints", "runners", "dead_letters")),
    ("SELECT, INSERT, UPDATE, DELETE", ("projections", "inbox")),
    ("SELECT", (VERSION_TABLE,)),
)


def grant_statements(role: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Returns the GRANT statements that give ``role`` what the application needs, no more.

    Run them as the role that owns the schema (the one that migrates). The application
    role can then append, read, snapshot and run subscriptions, but not rewrite events.
    """
    schema = validate_schema(schema)
    if not isinstance(role, str) or not role or "\x00" in role:
        raise ConfigurationError("the role must be a non-empty name")
    s, r = _quote(schema), _quote(role)
    statements = [f"GRANT USAGE ON SCHEMA {s} TO {r}"]
    for privileges, tables in _APP_PRIVILEGES:
        names = ", ".join(f"{s}.{_quote(t)}" for t in tables)
        statements.append(f"GRANT {privileges} ON {names} TO {r}")
    statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}")
    return statements


def grant(url: str, role: str, schema: str = DEFAULT_SCHEMA) -> list[str]:
    """Runs `grant_statements` against ``url`` in one transaction; returns them."""
    statements = grant_statements(role, schema)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with _reachable(url), engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    return statements


def _quote(name: str) -> str:
    """Quotes an identifier the SQL way: in double quotes, inner ones doubled."""
    return '"' + name.replace('"', '""') + '"'
