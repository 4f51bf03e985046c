"""Projections: one row per projection version (building, live, retired).

Revision ID: 0004_projections
Revises: 0003_subscriptions
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventstore.migrate import migration_schema

revision = "0004_projections"
down_revision = "0003_subscriptions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.create_table(
        "projections",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="building"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name="projections_pkey"),
        sa.CheckConstraint("status IN ('building', 'live', 'retired')",
                           name="projections_status_check"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )
    # At most one live version per projection.
    op.create_index("projections_one_live_idx", "projections", ["name"], unique=True,
                    schema=schema, postgresql_where=sa.text("status = 'live'"))


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_table("projections", schema=schema)
