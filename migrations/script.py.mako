"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

from eventstore.migrate import migration_schema

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    schema = migration_schema(op.get_context().config)
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    schema = migration_schema(op.get_context().config)
    ${downgrades if downgrades else "pass"}
