"""Snapshots: an aggregate's state as of a stream version, one row per stream.

Revision ID: 0002_snapshots
Revises: 0001_event_log
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from eventstore.migrate import migration_schema

revision = "0002_snapshots"
down_revision = "0001_event_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.create_table(
        "snapshots",
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("state_type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("state", postgresql.JSONB, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("stream_id", name="snapshots_pkey"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_table("snapshots", schema=schema)
