"""The event log: streams and events.

Revision ID: 0001_event_log
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from eventstore.migrate import migration_schema
from eventstore.postgres.schema import XID8

revision = "0001_event_log"
down_revision = None
branch_labels = ("eventstore",)
depends_on = None


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    op.create_table(
        "streams",
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("stream_id", name="streams_pkey"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )
    op.create_table(
        "events",
        sa.Column("global_position", sa.BigInteger, sa.Identity(always=False), nullable=False),
        sa.Column("transaction_id", XID8(), nullable=False,
                  server_default=sa.text("pg_current_xact_id()")),
        sa.Column("stream_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("schema_version", sa.Integer, nullable=False),
        sa.Column("shard_key", sa.Integer, nullable=False),
        sa.Column("data", postgresql.JSONB, nullable=False),
        sa.Column("metadata", postgresql.JSONB, nullable=False,
                  server_default=sa.text("'{}'::jsonb")),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("global_position", name="events_pkey"),
        sa.UniqueConstraint("event_id", name="events_event_id_key"),
        sa.UniqueConstraint("stream_id", "version", name="events_stream_id_version_key"),
        schema=schema,
        postgresql_with={"autovacuum_analyze_threshold": 10_000},
    )


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_table("events", schema=schema)
    op.drop_table("streams", schema=schema)
