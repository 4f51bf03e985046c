"""The cart summaries table, kept in the same transaction as the cart's events."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

metadata = sa.MetaData()

cart_summaries = sa.Table(
    "cart_summaries",
    metadata,
    sa.Column("cart_id", sa.Text, primary_key=True),
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)


async def save_summary(session: AsyncSession, cart_id: str, item_count: int, version: int) -> None:
    """Writes the cart's summary as of ``version`` (an older version never overwrites)."""
    statement = insert(cart_summaries).values(
        cart_id=cart_id, item_count=item_count, version=version
    )
    statement = statement.on_conflict_do_update(
        index_elements=[cart_summaries.c.cart_id],
        set_={"item_count": statement.excluded.item_count, "version": statement.excluded.version},
        where=cart_summaries.c.version < statement.excluded.version,
    )
    await session.execute(statement)
