"""Create the cart summaries table.

Revision ID: 7c2d9e4f1a0b
Revises:
Create Date: 2026-12-01 18:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "7c2d9e4f1a0b"
down_revision = None
branch_labels = ("carts",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cart_summaries",
        sa.Column("cart_id", sa.Text, primary_key=True),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cart_summaries")
