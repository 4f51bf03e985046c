"""Subscriptions: the window index on events, checkpoints, runners and dead letters.

Revision ID: 0003_subscriptions
Revises: 0002_snapshots
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from eventstore.migrate import migration_schema

revision = "0003_subscriptions"
down_revision = "0002_snapshots"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.create_index("events_transaction_id_idx", "events",
                    ["transaction_id", "global_position"], schema=schema)
    op.create_table(
        "checkpoints",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("shard", sa.Integer, nullable=False),
        sa.Column("shard_count", sa.Integer, nullable=False),
        sa.Column("low", sa.Text, nullable=False),
        sa.Column("high", sa.Text, nullable=True),
        sa.Column("position", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("handled", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", "shard", name="checkpoints_pkey"),
        sa.CheckConstraint("status IN ('running', 'paused', 'halted')",
                           name="checkpoints_status_check"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )
    op.create_table(
        "runners",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("runner", sa.Text, nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "runner", name="runners_pkey"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )
    op.create_table(
        "dead_letters",
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
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="dead_letters_pkey"),
        sa.UniqueConstraint("name", "global_position", name="dead_letters_name_position_key"),
        sa.CheckConstraint("status IN ('parked', 'retried', 'discarded')",
                           name="dead_letters_status_check"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )
    op.create_index("dead_letters_parked_idx", "dead_letters", ["name", "stream_id"],
                    schema=schema, postgresql_where=sa.text("status = 'parked'"))


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_table("dead_letters", schema=schema)
    op.drop_table("runners", schema=schema)
    op.drop_table("checkpoints", schema=schema)
    op.drop_index("events_transaction_id_idx", table_name="events", schema=schema)
