"""Alembic environment of the event store's own migrations (standalone use).

In an application's alembic tree, only ``versions/`` is used (see docs/how-to/alembic.md);
the application's env.py then runs these revisions.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from eventstore.migrate import migration_schema
from eventstore.postgres.schema import VERSION_TABLE, make_metadata

config = context.config
schema = migration_schema(config)
# One migrator at a time: concurrent `eventstore migrate` runs wait for each other.
LOCK_KEY = 0x6576_656E_7473  # "events"


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(
        config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool
    )
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(conn: sa.Connection) -> None:
    conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
    try:
        conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
        conn.commit()
        context.configure(
            connection=conn,
            target_metadata=make_metadata(schema),
            version_table=VERSION_TABLE,
            version_table_schema=schema,
            include_schemas=False,
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()
    finally:
        if conn.in_transaction():
            conn.rollback()  # after a failure the transaction is aborted; the lock survives
        conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported by the event store migrations")
run_migrations_online()
