"""The one boundary where driver errors become the toolkit's own errors."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import psycopg
import psycopg_pool

from eventstore.errors import (
    DatabaseUnavailableError,
    DuplicateEventIdError,
    EventStoreError,
    InvalidArgumentError,
    PermissionDeniedError,
    SchemaNotMigratedError,
    TransactionConflictError,
)

__all__ = ["translated_errors"]


@contextlib.contextmanager
def translated_errors(stream_id: str | None = None) -> Iterator[None]:
    """Translates driver errors into the toolkit's own, by constraint name and class.

    This is the single boundary where psycopg exceptions become `EventStoreError`s.
    """
    try:
        yield
    except EventStoreError:
        raise
    except psycopg.errors.UniqueViolation as exc:
        if exc.diag.constraint_name == "events_event_id_key":
            raise DuplicateEventIdError(stream_id or "", []) from exc
        raise
    except psycopg.errors.DataError as exc:  # e.g. a snapshot state that is not JSON
        raise InvalidArgumentError(f"Postgres refused the data: {exc}") from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise PermissionDeniedError(
            f"the database refused: {exc.diag.message_primary} (see `eventstore grants`)"
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise SchemaNotMigratedError(
            f"event store tables not found ({exc.diag.message_primary}): run `eventstore "
            "migrate`, or `alembic upgrade heads` where your alembic tree runs the event "
            "store's revisions; check the store's schema= too"
        ) from exc
    except psycopg_pool.PoolTimeout as exc:
        raise DatabaseUnavailableError(f"no database connection in time: {exc}") from exc
    except psycopg.OperationalError as exc:
        # psycopg puts SQLSTATE class 40 (40001 serialization, 40P01 deadlock) directly
        # under OperationalError, so the class is told by its code.
        if (exc.sqlstate or "").startswith("40"):
            raise TransactionConflictError(f"transaction aborted by Postgres: {exc}") from exc
        if not _is_connection_loss(exc):
            raise  # a statement or lock timeout, a cancel: not an outage
        raise DatabaseUnavailableError(f"database unavailable: {exc}") from exc


# SQLSTATE class 08 (connection exception) and the server shutting down or starting up.
_LOST: Final = ("57P01", "57P02", "57P03")


def _is_connection_loss(exc: psycopg.OperationalError) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _LOST
