"""The event store's tables, defined once as SQLAlchemy Core for the code and for alembic."""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.base import ischema_names

__all__ = [
    "DEFAULT_SCHEMA",
    "VERSION_TABLE",
    "XID8",
    "make_metadata",
]

DEFAULT_SCHEMA: Final = "eventstore"
# The library's own alembic version table, kept in its schema so it never clobbers the
# application's `alembic_version`.
VERSION_TABLE: Final = "alembic_version"


class XID8(sa.types.UserDefinedType[int]):
    """Maps Postgres's 64-bit, wraparound-free transaction id type."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "XID8"


# Teach reflection the type, so alembic's autogenerate compares it instead of warning.
ischema_names.setdefault("xid8", XID8)


# Never let autovacuum analyze these tables while they are tiny: statistics that say "one
# page" make Postgres cache generic plans with sequential scans for the store's prepared
# statements, and those plans outlive the table's growth until the next analyze. Before a
# first analyze the planner assumes ten pages and picks the indexes. See
# docs/discussions/append.md.
STORAGE: Final = {"autovacuum_analyze_threshold": 10_000}


def make_metadata(schema: str = DEFAULT_SCHEMA) -> sa.MetaData:
    """Builds the tables in the given Postgres schema."""
    md = sa.MetaData(schema=schema)
    sa.Table(
        "streams",
        md,
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("stream_id", name="streams_pkey"),
        postgresql_with=STORAGE,
    )
    sa.Table(
        "events",
        md,
        sa.Column("global_position", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column(
            "transaction_id",
            XID8(),
            nullable=False,
            server_default=sa.text("pg_current_xact_id()"),
        ),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("shard_key", sa.Integer, nullable=False),
        sa.Column("data", postgresql.JSONB, nullable=False),
        sa.Column(
            "metadata", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")
        ),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("global_position", name="events_pkey"),
        sa.UniqueConstraint("event_id", name="events_event_id_key"),
        sa.UniqueConstraint("stream_id", "version", name="events_stream_id_version_key"),
        # The subscription engine's window query: transaction id ranges, then positions.
        sa.Index("events_transaction_id_idx", "transaction_id", "global_position"),
        postgresql_with=STORAGE,
    )
    sa.Table(
        "snapshots",
        md,
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("state_type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("state", postgresql.JSONB, nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        # The event at ``version`` when the snapshot was taken (NULL for snapshots stored
        # before 0007: those are never loaded, and the next snapshot replaces them).
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.PrimaryKeyConstraint("stream_id", name="snapshots_pkey"),
        postgresql_with=STORAGE,
    )
    _subscription_tables(md)
    _projection_and_inbox_tables(md)
    return md


def _projection_and_inbox_tables(md: sa.MetaData) -> None:
    """Adds the projections' version rows and inline windows, and the consumers' inbox."""
    sa.Table(
        "projections",
        md,
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="building"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name="projections_pkey"),
        sa.CheckConstraint(
            "status IN ('building', 'live', 'retired')", name="projections_status_check"
        ),
        sa.Index(
            "projections_one_live_idx",
            "name",
            unique=True,
            postgresql_where=sa.text("status = 'live'"),
        ),
        postgresql_with=STORAGE,
    )
    # Each version's inline window (see projections.sql; migration 0008).
    sa.Table(
        "projection_modes",
        md,
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("inline_from", sa.Text, nullable=True),
        sa.Column("inline_until", sa.Text, nullable=True),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("name", "version", name="projection_modes_pkey"),
        sa.CheckConstraint(
            "inline_until IS NULL OR inline_from IS NOT NULL", name="projection_modes_check"
        ),
        postgresql_with=STORAGE,
    )
    sa.Table(
        "inbox",
        md,
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column(
            "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="inbox_pkey"),
        postgresql_with=STORAGE,
    )


def _now() -> sa.Column[Any]:
    return sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def _subscription_tables(md: sa.MetaData) -> None:
    """Adds the subscription engine's tables: checkpoints, runners, dead letters."""
    sa.Table(
        "checkpoints",
        md,
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("shard_count", sa.Integer, nullable=False),
        # The window (see eventstore.subscriptions.window): pg_snapshot text forms.
        sa.Column("low", sa.Text, nullable=False),
        sa.Column("high", sa.Text, nullable=True),
        sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("handled", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        _now(),
        sa.PrimaryKeyConstraint("name", "shard", name="checkpoints_pkey"),
        sa.CheckConstraint(
            "status IN ('running', 'paused', 'halted')", name="checkpoints_status_check"
        ),
        postgresql_with=STORAGE,
    )
    sa.Table(
        "runners",
        md,
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("runner", sa.Text, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "runner", name="runners_pkey"),
        postgresql_with=STORAGE,
    )
    sa.Table(
        "dead_letters",
        md,
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("global_position", sa.BigInteger, nullable=False),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("status", sa.Text, nullable=False, server_default="parked"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        _now(),
        sa.PrimaryKeyConstraint("id", name="dead_letters_pkey"),
        sa.UniqueConstraint("name", "global_position", name="dead_letters_name_position_key"),
        sa.CheckConstraint(
            "status IN ('parked', 'retried', 'discarded')", name="dead_letters_status_check"
        ),
        # Held streams: the engine asks, per batch, which of its streams are parked.
        sa.Index(
            "dead_letters_parked_idx",
            "name",
            "stream_id",
            postgresql_where=sa.text("status = 'parked'"),
        ),
        postgresql_with=STORAGE,
    )
