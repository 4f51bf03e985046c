"""Runs the shipped alembic migrations, standalone or from a user's own alembic tree.

The revisions live in the repository's ``migrations/`` folder, which the wheel carries as
``eventstore/_migrations``. They keep their own version table inside the event store's
schema, under the branch label ``eventstore``, so they never touch an application's
``alembic_version``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from eventstore._append import validate_schema
from eventstore.errors import ConfigurationError, DatabaseUnavailableError
from eventstore.postgres.connections import probe, sqlalchemy_url
from eventstore.postgres.schema import DEFAULT_SCHEMA, VERSION_TABLE
from eventstore.settings import Settings

__all__ = [
    "BRANCH_LABEL",
    "VersionRecord",
    "alembic_config",
    "current_revisions",
    "downgrade",
    "find_versions",
    "head_revisions",
    "is_up_to_date",
    "migration_schema",
    "migrations_dir",
    "tree_revisions",
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
    """Migrates the database up to ``revision`` (all heads by default).

    Refuses with `ConfigurationError` when the event store's revisions are recorded by an
    application's alembic tree: that tree migrates them, with ``alembic upgrade heads``.
    """
    _refuse_if_tree_managed(url, schema)
    with _reachable(url), _known_revision(revision):
        command.upgrade(alembic_config(url, schema), revision)


def downgrade(url: str, revision: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Migrates the database down to ``revision`` (``base`` removes everything)."""
    _refuse_if_tree_managed(url, schema)
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
    return set(_script().get_heads())


@cache
def _script() -> ScriptDirectory:
    return ScriptDirectory(str(migrations_dir()))


@cache
def _shipped_revisions() -> frozenset[str]:
    return frozenset(r.revision for r in _script().walk_revisions())


@dataclasses.dataclass(frozen=True, slots=True)
class VersionRecord:
    """Where the database records the event store's revisions, and which ones.

    ``table`` is the schema-qualified version table (``None`` when there is none yet);
    ``standalone`` is true for the store's own table (``SCHEMA.alembic_version``, written by
    `upgrade` and ``eventstore migrate``), false for an application's alembic tree.
    """

    table: str | None
    revisions: frozenset[str]
    standalone: bool

    def describe(self) -> str:
        """Returns the revisions as text: ``0008_projection_modes`` or ``nothing``."""
        return ", ".join(sorted(self.revisions)) or "nothing"


def find_versions(
    url: str, schema: str = DEFAULT_SCHEMA, version_table: str | None = None
) -> VersionRecord:
    """Finds the event store's revisions: in its own version table, else in an app's.

    With ``version_table`` (``"alembic_version"`` or ``"public.alembic_version"``) only that
    table is read. Otherwise the store's own table (``SCHEMA.alembic_version``) is read
    first; if it records nothing, every other alembic version table of the database (a
    table with a ``version_num`` column) is searched for the shipped revision ids, which is
    where an application's tree records them after ``alembic upgrade heads``.
    """
    schema = validate_schema(schema)
    probe(url)
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with _reachable(url), engine.connect() as conn:
            return _find_versions(conn, schema, version_table)
    finally:
        engine.dispose()


def _find_versions(conn: sa.Connection, schema: str, version_table: str | None) -> VersionRecord:
    if version_table is not None:
        table_schema, _, name = version_table.rpartition(".")
        qualified = conn.execute(
            sa.text("SELECT to_regclass(:t)::text"), {"t": _qualify(table_schema, name)}
        ).scalar()
        found = _read_versions(conn, table_schema or None, name) if qualified else set()
        found &= _shipped_revisions()  # an application's table holds its own heads too
        is_own = table_schema == schema and name == VERSION_TABLE
        return VersionRecord(qualified or version_table, frozenset(found), is_own)
    own_table = f"{schema}.{VERSION_TABLE}"
    own: set[str] = set()
    if _exists(conn, schema, VERSION_TABLE):
        own = _read_versions(conn, schema, VERSION_TABLE)
    if own:
        return VersionRecord(own_table, frozenset(own), True)
    # An application's tree: its version table holds the shipped ids, and the tables are in
    # this schema. The own table of an event store in another schema does not count.
    has_tables = _exists(conn, schema, "streams")
    for table_schema, name in _version_tables(conn) if has_tables else []:
        if name == VERSION_TABLE and _exists(conn, table_schema, "streams"):
            continue
        found = _read_versions(conn, table_schema, name) & _shipped_revisions()
        if found:
            return VersionRecord(f"{table_schema}.{name}", frozenset(found), False)
    if _exists(conn, schema, "events") and not _exists(conn, schema, VERSION_TABLE):
        # Tables without any record of the revisions: an alembic tree that merged the
        # event store's branch away, or a hand-made schema. Not ours to migrate.
        return VersionRecord(None, frozenset(), False)
    return VersionRecord(own_table, frozenset(), True)


def _qualify(table_schema: str, name: str) -> str:
    return f"{_quote(table_schema)}.{_quote(name)}" if table_schema else _quote(name)


def _exists(conn: sa.Connection, schema: str, name: str) -> bool:
    found = conn.execute(
        sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": _qualify(schema, name)}
    ).scalar()
    return bool(found)


def _version_tables(conn: sa.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        sa.text(
            "SELECT table_schema, table_name FROM information_schema.columns "
            "WHERE column_name = 'version_num' AND table_schema NOT IN "
            "('pg_catalog', 'information_schema') ORDER BY table_schema, table_name"
        )
    ).all()
    return [(str(r[0]), str(r[1])) for r in rows]


def _read_versions(conn: sa.Connection, table_schema: str | None, name: str) -> set[str]:
    context = MigrationContext.configure(
        conn, opts={"version_table": name, "version_table_schema": table_schema}
    )
    return set(context.get_current_heads())


def current_revisions(
    url: str, schema: str = DEFAULT_SCHEMA, version_table: str | None = None
) -> set[str]:
    """Returns the event store's revisions the database is at (empty when never migrated).

    Found in the store's own version table, or in an application's alembic tree (see
    `find_versions`).
    """
    return set(find_versions(url, schema, version_table).revisions)


def is_up_to_date(url: str, schema: str = DEFAULT_SCHEMA, version_table: str | None = None) -> bool:
    """Tells whether the database is migrated to the shipped heads, by either setup."""
    return current_revisions(url, schema, version_table) == head_revisions()


def tree_revisions(alembic_ini: str | Path, url: str | None = None) -> set[str]:
    """Returns the event store's revisions an application's alembic tree has applied.

    Runs the tree's ``env.py`` the way ``alembic current`` does (nothing is changed), so
    its own version table and URL are used; ``url`` replaces ``sqlalchemy.url`` for an
    ``env.py`` that reads it. Revisions reached through a merge revision count too.
    """
    path = Path(alembic_ini)
    if not path.is_file():
        raise ConfigurationError(f"no alembic config at {path}")
    config = Config(str(path))
    if url is not None:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    script = ScriptDirectory.from_config(config)
    current: set[str] = set()

    def record(rev: Any, context: MigrationContext) -> list[Any]:
        current.update(context.get_current_heads())
        return []

    try:
        with _reachable(url or ""), EnvironmentContext(config, script, fn=record, dont_mutate=True):
            script.run_env()
        reached = {r.revision for r in script.iterate_revisions(tuple(current), "base") if r}
    except DatabaseUnavailableError:
        raise
    except Exception as exc:  # the application's env.py may raise anything: say where
        detail = _one_line(str(exc)) or type(exc).__name__
        raise ConfigurationError(
            f"the alembic tree of {path} failed: {type(exc).__name__}: {detail}"
        ) from exc
    ours = reached & _shipped_revisions()
    shipped = _script()
    return {r for r in ours if not (set(shipped.get_revision(r).nextrev) & ours)}


def upgrade_tree(alembic_ini: str | Path, url: str, revision: str = "heads") -> None:
    """Runs an application's alembic tree up to ``revision`` against ``url``.

    ``url`` becomes the config's ``sqlalchemy.url`` (``postgresql+psycopg://``), so the
    tree's ``env.py`` must connect with that option, as ``alembic init``'s template does.
    """
    path = Path(alembic_ini)
    if not path.is_file():
        raise ConfigurationError(f"no alembic config at {path}")
    config = Config(str(path))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    with _reachable(url), _known_revision(revision):
        command.upgrade(config, revision)


def _refuse_if_tree_managed(url: str, schema: str) -> None:
    record = find_versions(url, schema)
    if record.standalone:
        return
    if record.table is None:
        raise ConfigurationError(
            f"schema {schema!r} already holds the event store's tables but has no "
            f"{schema}.{VERSION_TABLE}: they were created by an alembic tree; migrate with "
            "`alembic upgrade heads` there, not `eventstore migrate`"
        )
    raise ConfigurationError(
        f"the event store's revisions ({record.describe()}) are recorded in "
        f"{record.table} by your alembic tree: run `alembic upgrade heads` there, "
        "not `eventstore migrate`"
    )


@contextmanager
def _reachable(url: str) -> Iterator[None]:
    try:
        yield
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailableError(f"database unavailable: {_one_line(str(exc.orig))}") from exc


def _one_line(text: str) -> str:
    return " ".join(text.split())


# What the application role needs, table by table: appending and reading events,
# claiming stream versions, snapshots, and running subscriptions (checkpoints, leases,
# dead letters), projections and the inbox. Never UPDATE, DELETE or TRUNCATE on events.
_APP_PRIVILEGES: Final = (
    ("SELECT, INSERT", ("events",)),
    ("SELECT, INSERT, UPDATE", ("streams",)),
    ("SELECT, INSERT, UPDATE, DELETE", ("snapshots", "checkpoints", "runners", "dead_letters")),
    ("SELECT, INSERT, UPDATE, DELETE", ("projections", "projection_modes", "inbox")),
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
