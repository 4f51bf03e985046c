"""SQL statements of projections, one constant per operation.

The version rows live in the event store's schema (``<schema>.projections``, migration
0004: one live version per name, by a partial unique index). Which tables belong to which
version is recorded on the tables themselves, as a comment (`table_comment`), so that
`switch` and `drop` work from the database alone, without the projection's code.

Statements on rows are rendered per schema (`render`); statements on a projection's own
tables and views are templates whose identifiers are filled in with `psycopg.sql.Identifier`
(`ddl`), never with string formatting.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Final

from psycopg import sql

__all__ = [
    "ProjectionStatements",
    "ddl",
    "lock_params",
    "modes_table",
    "parse_table_comment",
    "render",
    "table_comment",
    "table_comment_prefix",
]

# Serialises prepare, switch and drop of one projection across processes (transaction-level
# advisory lock, two-key form: this class id, then the name's hash).
_LOCK_CLASS: Final = 0x70726F6A  # "proj"
LOCK_NAME: Final = "SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(%(name)s))"

_VERSION_COLUMNS: Final = (
    "SELECT name, version, status, created_at, switched_at FROM {projections} "
)

VERSIONS: Final = (
    _VERSION_COLUMNS + "WHERE (%(name)s::text IS NULL OR name = %(name)s) ORDER BY name, version"
)

# The switch locks the live version's row: its batches wait at their status read.
LOCK_VERSION: Final = (
    "SELECT 1 FROM {projections} WHERE name = %(name)s AND version = %(version)s FOR UPDATE"
)

LIVE_VERSION: Final = "SELECT version FROM {projections} WHERE name = %(name)s AND status = 'live'"

REGISTER_VERSION: Final = (
    "INSERT INTO {projections} (name, version, status, switched_at) "
    "VALUES (%(name)s, %(version)s, %(status)s, "
    "CASE WHEN %(status)s = 'live' THEN now() END) ON CONFLICT (name, version) DO NOTHING"
)

# The old live version, and any building version below the new one (an abandoned rebuild),
# retire first: the partial unique index allows one live row per name at every statement.
RETIRE_FOR_SWITCH: Final = (
    "UPDATE {projections} SET status = 'retired' WHERE name = %(name)s "
    "AND (status = 'live' OR (status = 'building' AND version < %(version)s)) RETURNING version"
)

PROMOTE: Final = (
    "UPDATE {projections} SET status = 'live', switched_at = now() "
    "WHERE name = %(name)s AND version = %(version)s AND status = 'building' RETURNING version"
)

DELETE_VERSION: Final = "DELETE FROM {projections} WHERE name = %(name)s AND version = %(version)s"

# Read by every batch of a projection, in the batch transaction: FOR SHARE makes a switch
# (which updates the row) wait for the batches in flight, and the batches after it see the
# new status, so "replay" flips exactly at the switch. The version's inline window comes
# along, read without a lock: a mode switch does not wait for the daemon (see `inline`).
STATUS_FOR_SHARE: Final = (
    "SELECT p.status, m.inline_from, m.inline_until FROM {projections} p "
    "LEFT JOIN {projection_modes} m ON m.name = p.name AND m.version = p.version "
    "WHERE p.name = %(name)s AND p.version = %(version)s FOR SHARE OF p"
)

# The same without the inline windows, where their table does not exist.
STATUS_ONLY: Final = (
    "SELECT status FROM {projections} WHERE name = %(name)s AND version = %(version)s FOR SHARE"
)

# Read by every inline application, in the appending transaction: both rows FOR SHARE, so
# a blue/green switch (the version row) and a mode switch (the mode row) wait for the
# appending transactions in flight, and those after them see what the switch wrote.
#
# First (the subquery runs below the row locks), the name's advisory lock in shared mode:
# a switch takes it exclusively before it locks the rows, and Postgres queues a heavyweight
# lock request behind a waiting conflicting one, so appends that start after a switch asked
# wait for it. Row locks alone have no such queue: FOR SHARE never waits for a FOR UPDATE
# that waits, and under a steady stream of inline appends a switch waited for minutes
# (each of its waits shorter than its lock_timeout).
INLINE_STATE: Final = (
    "SELECT p.status, m.inline_from, m.inline_until "
    "FROM (SELECT pg_advisory_xact_lock_shared(%(lock_class)s, hashtext(%(name)s))) AS l, "
    "{projections} p "
    "JOIN {projection_modes} m ON m.name = p.name AND m.version = p.version "
    "WHERE p.name = %(name)s AND p.version = %(version)s FOR SHARE OF p, m"
)

# The mode switch: appending transactions in flight finish first, later ones wait for it.
LOCK_MODE: Final = (
    "SELECT inline_from, inline_until FROM {projection_modes} "
    "WHERE name = %(name)s AND version = %(version)s FOR UPDATE"
)

MODE_OF: Final = (
    "SELECT inline_from, inline_until FROM {projection_modes} "
    "WHERE name = %(name)s AND version = %(version)s"
)

REGISTER_MODE: Final = (
    "INSERT INTO {projection_modes} (name, version) VALUES (%(name)s, %(version)s) "
    "ON CONFLICT (name, version) DO NOTHING"
)

SET_MODE: Final = (
    "UPDATE {projection_modes} SET inline_from = %(inline_from)s, "
    "inline_until = %(inline_until)s, changed_at = now() "
    "WHERE name = %(name)s AND version = %(version)s"
)

DELETE_MODE: Final = (
    "DELETE FROM {projection_modes} WHERE name = %(name)s AND version = %(version)s"
)

# The table of inline windows. Migration 0008 creates it; on a database not migrated that
# far, `prepare` creates it when missing (under its own advisory lock, so that two daemons
# starting together do not both create it), exactly as 0008 does, which then keeps it.
# Each version has a row: its inline window is the transactions visible in
# ``inline_until`` and not in ``inline_from`` (``inline_until`` NULL: inline now, up to
# whatever commits later).
MODES_EXIST: Final = "SELECT to_regclass(%(table)s) IS NOT NULL"
LOCK_MODES_DDL: Final = "SELECT pg_advisory_xact_lock(%(lock_class)s, 0)"
CREATE_MODES: Final = (
    "CREATE TABLE IF NOT EXISTS {projection_modes} ("
    "name text NOT NULL, version integer NOT NULL, "
    "inline_from text, inline_until text, "
    "changed_at timestamptz NOT NULL DEFAULT now(), "
    "CONSTRAINT projection_modes_pkey PRIMARY KEY (name, version), "
    "CONSTRAINT projection_modes_check "
    "CHECK (inline_until IS NULL OR inline_from IS NOT NULL)) "
    "WITH (autovacuum_analyze_threshold = 10000)"
)

# A version that starts from a place in the log instead of its beginning: its checkpoints
# are created here, before its runner's (which then finds them, with the same shard count).
CREATE_CHECKPOINTS_AT: Final = (
    "INSERT INTO {checkpoints} (name, shard, shard_count, low, high, position) "
    "SELECT %(subscription)s, s, %(shards)s, %(low)s, %(high)s, %(position)s "
    "FROM generate_series(0, %(shards)s - 1) AS s ON CONFLICT (name, shard) DO NOTHING"
)
HAS_CHECKPOINTS: Final = "SELECT count(*) FROM {checkpoints} WHERE name = %(subscription)s"
# The snapshot, and this transaction's own id: a snapshot shows its own transaction as
# finished when later ones finished first, where every other session sees it running.
CURRENT_SNAPSHOT: Final = (
    "SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text::bigint"
)

# The subscription engine has no statement that forgets a subscription, so dropping a
# version deletes its rows from the engine's tables here (see the package docstring).
DELETE_CHECKPOINTS: Final = "DELETE FROM {checkpoints} WHERE name = %(subscription)s"
DELETE_RUNNERS: Final = "DELETE FROM {runners} WHERE name = %(subscription)s"
DELETE_DEAD_LETTERS: Final = "DELETE FROM {dead_letters} WHERE name = %(subscription)s"

# How far each shard of a subscription may have applied events: its open window's high
# (part of that window may be handled already), else its low. The engine exposes only lows.
REACHED: Final = (
    "SELECT shard, coalesce(high, low) FROM {checkpoints} WHERE name = %(subscription)s"
)

LIVE_OWNERS: Final = (
    "SELECT DISTINCT owner FROM {checkpoints} WHERE name = %(subscription)s "
    "AND owner IS NOT NULL AND lease_until >= now()"
)

# The tables a version owns, found by the comment `prepare` puts on them.
TAGGED_TABLES: Final = (
    "SELECT n.nspname, c.relname, d.description FROM pg_catalog.pg_description d "
    "JOIN pg_catalog.pg_class c ON c.oid = d.objoid "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE d.classoid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0 "
    "AND c.relkind IN ('r', 'p') AND starts_with(d.description, %(prefix)s) "
    "ORDER BY n.nspname, c.relname"
)

EXISTING_RELATIONS: Final = (
    "SELECT c.relname, c.relkind::text, pg_catalog.obj_description(c.oid, 'pg_class') "
    "FROM pg_catalog.pg_class c "
    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s::text[])"
)

# Templates of statements on a projection's own objects (identifiers only, see `ddl`).
CREATE_SCHEMA: Final = "CREATE SCHEMA IF NOT EXISTS {schema}"
COMMENT_TABLE: Final = "COMMENT ON TABLE {table} IS {comment}"
REPLACE_VIEW: Final = "CREATE OR REPLACE VIEW {view} AS SELECT * FROM {table}"
DROP_VIEW: Final = "DROP VIEW IF EXISTS {view}"
CREATE_VIEW: Final = "CREATE VIEW {view} AS SELECT * FROM {table}"
DROP_TABLE: Final = "DROP TABLE IF EXISTS {table}"
# A switch waits this long at most for readers' locks on a view, then fails and is retried,
# rather than stall the batches queued behind it.
LOCK_TIMEOUT: Final = "SET LOCAL lock_timeout = '5s'"


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatements:
    """Holds every row statement rendered for one schema, as bytes."""

    lock_name: bytes
    versions: bytes
    lock_version: bytes
    live_version: bytes
    register_version: bytes
    retire_for_switch: bytes
    promote: bytes
    delete_version: bytes
    status_for_share: bytes
    status_only: bytes
    inline_state: bytes
    lock_mode: bytes
    mode_of: bytes
    register_mode: bytes
    set_mode: bytes
    delete_mode: bytes
    modes_exist: bytes
    lock_modes_ddl: bytes
    create_modes: bytes
    create_checkpoints_at: bytes
    has_checkpoints: bytes
    current_snapshot: bytes
    delete_checkpoints: bytes
    delete_runners: bytes
    delete_dead_letters: bytes
    reached: bytes
    live_owners: bytes
    tagged_tables: bytes
    existing_relations: bytes


@functools.cache
def render(schema: str) -> ProjectionStatements:
    """Renders all row statements for the event store's schema (once per schema)."""
    names = {
        table: sql.Identifier(schema, table)
        for table in (
            "projections",
            "projection_modes",
            "checkpoints",
            "runners",
            "dead_letters",
        )
    }
    module = globals()
    return ProjectionStatements(
        **{
            field.name: sql.SQL(module[field.name.upper()]).format(**names).as_bytes(None)
            for field in dataclasses.fields(ProjectionStatements)
        }
    )


def modes_table(schema: str) -> str:
    """Returns the qualified name of the inline windows' table, for ``to_regclass``."""
    return sql.Identifier(schema, "projection_modes").as_string(None)


def lock_params(name: str) -> dict[str, object]:
    """Returns the parameters of `LOCK_NAME` for a projection name."""
    return {"lock_class": _LOCK_CLASS, "name": name}


def ddl(template: str, **identifiers: str | tuple[str, str]) -> sql.Composed:
    """Fills a template with identifiers: a name, or a ``(schema, name)`` pair.

    ``comment`` is the one literal: a table comment is not a parameter in Postgres.
    """
    parts: dict[str, sql.Composable] = {}
    for key, value in identifiers.items():
        if key == "comment":
            parts[key] = sql.Literal(value)
        elif isinstance(value, tuple):
            parts[key] = sql.Identifier(*value)
        else:
            parts[key] = sql.Identifier(value)
    return sql.SQL(template).format(**parts)


_COMMENT: Final = re.compile(
    r"eventkeeper projection (?P<name>\S+) version (?P<version>\d+) table (?P<table>\S+)"
)


def table_comment_prefix(name: str, version: int) -> str:
    """Returns how the comments of a version's tables start."""
    return f"eventkeeper projection {name} version {version} table "


def table_comment(name: str, version: int, table: str) -> str:
    """Returns the comment that marks a table as one of a projection version's."""
    return table_comment_prefix(name, version) + table


def parse_table_comment(comment: str) -> tuple[str, int, str] | None:
    """Returns ``(name, version, table)`` from a table comment, or None for another comment."""
    found = _COMMENT.fullmatch(comment)
    if found is None:
        return None
    return found["name"], int(found["version"]), found["table"]
