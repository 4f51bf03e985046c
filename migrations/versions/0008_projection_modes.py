"""Projection modes: each projection version's inline window (``projection_modes``).

A row per projection version; its inline window is the transactions visible in
``inline_until`` and not in ``inline_from`` (``inline_until`` NULL: inline now). Before this
revision ``prepare`` created the table at run time (and still does on a database not yet
migrated here), with the same columns and constraint names: such a table is kept, rows
and all, and given the storage options of its neighbours when it lacks them.

Revision ID: 0008_projection_modes
Revises: 0007_snapshot_event
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventstore.migrate import migration_schema

revision = "0008_projection_modes"
down_revision = "0007_snapshot_event"
branch_labels = None
depends_on = None

STORAGE = {"autovacuum_analyze_threshold": 10_000}


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    bind = op.get_bind()
    if sa.inspect(bind).has_table("projection_modes", schema=schema):
        # Created by `prepare` on a database not yet at this revision: same columns and
        # constraint names. Only tables from builds before the storage option lack it.
        table = sa.Table("projection_modes", sa.MetaData(), schema=schema)
        name = bind.dialect.identifier_preparer.format_table(table)
        options = bind.execute(
            sa.text("SELECT reloptions FROM pg_catalog.pg_class WHERE oid = to_regclass(:t)"),
            {"t": name},
        ).scalar()
        if not options or "autovacuum_analyze_threshold=10000" not in options:
            op.execute(f"ALTER TABLE {name} SET (autovacuum_analyze_threshold = 10000)")
        return
    op.create_table(
        "projection_modes",
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("inline_from", sa.Text, nullable=True),
        sa.Column("inline_until", sa.Text, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", "version", name="projection_modes_pkey"),
        sa.CheckConstraint("inline_until IS NULL OR inline_from IS NOT NULL",
                           name="projection_modes_check"),
        schema=schema,
        postgresql_with=STORAGE,
    )


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    op.drop_table("projection_modes", schema=schema)
