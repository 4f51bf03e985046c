"""Append-only events: UPDATE, DELETE and TRUNCATE of events are refused by the database.

The few legitimate rewrites (retention, erasure, a repair by hand) say so explicitly in
their own transaction: ``SET LOCAL eventstore.allow_rewrite = 'on'``.

Revision ID: 0006_append_only
Revises: 0005_inbox
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

from eventstore.migrate import migration_schema

revision = "0006_append_only"
down_revision = "0005_inbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = op.get_context().dialect.identifier_preparer.quote_schema(
        migration_schema(op.get_context().config)
    )
    op.execute(
        f"CREATE FUNCTION {schema}.refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN "
        "IF coalesce(current_setting('eventstore.allow_rewrite', true), '') = 'on' THEN "
        "RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END; END IF; "
        "RAISE EXCEPTION 'events are append-only: % of %.% refused', TG_OP, "
        "TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege', "
        "HINT = 'a deliberate rewrite runs SET LOCAL eventstore.allow_rewrite = ''on'' first'; "
        "END $$"
    )
    op.execute(
        f"CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON {schema}.events "
        f"FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_rewrite()"
    )
    op.execute(
        f"CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {schema}.events "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_rewrite()"
    )


def downgrade() -> None:
    schema = op.get_context().dialect.identifier_preparer.quote_schema(
        migration_schema(op.get_context().config)
    )
    op.execute(f"DROP TRIGGER IF EXISTS events_no_truncate ON {schema}.events")
    op.execute(f"DROP TRIGGER IF EXISTS events_append_only ON {schema}.events")
    op.execute(f"DROP FUNCTION IF EXISTS {schema}.refuse_rewrite()")
