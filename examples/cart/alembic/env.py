"""The carts' alembic environment, which also runs the event store's revisions."""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context
from cart.read_model import metadata

from eventstore.migrate import migration_schema
from eventstore.postgres.alembic import include_object_for
from eventstore.postgres.connections import sqlalchemy_url

config = context.config
target_metadata = metadata

# Autogenerate must ignore the event store's schema, whatever its name in this run.
include_object = include_object_for(migration_schema(config))


def run_migrations_online() -> None:
    url = config.attributes.get("database_url") or os.environ["DATABASE_URL"]
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_schemas=True,
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
