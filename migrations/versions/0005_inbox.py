"""Inbox: the messages a consumer has processed, written in its own transaction.

Revision ID: 0005_inbox
Revises: 0004_projections
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventstore.migrate import migration_schema

revision = "0005_inbox"
down_revision = "0004_projections"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("consumer", "message_id", name="inbox_pkey"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_table("inbox", schema=schema)
