"""Snapshots are bound to the event they were taken at (``snapshots.event_id``).

A snapshot records the id of the event at its version; the store hands a snapshot out
only while that very event is still the one at its version. Snapshots stored before this
revision have no event id: they are not loaded, and the next snapshot replaces them.

Revision ID: 0007_snapshot_event
Revises: 0006_append_only
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from eventstore.migrate import migration_schema

revision = "0007_snapshot_event"
down_revision = "0006_append_only"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.add_column(
        "snapshots",
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=True),
        schema=schema,
    )


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_column("snapshots", "event_id", schema=schema)
