"""Everything that talks to Postgres: SQL, tables, connections, the error boundary, the store."""

from eventstore.postgres.store import PostgresEventStore
from eventstore.postgres.store_async import AsyncPostgresEventStore

__all__ = ["AsyncPostgresEventStore", "PostgresEventStore"]
