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

__all__ = ["translated", "translated_errors"]


@contextlib.contextmanager
def translated_errors(stream_id: str | None = None) -> Iterator[None]:
    """Translates driver errors into the toolkit's own, by constraint name and class.

    This is the single boundary where psycopg exceptions become `EventStoreError`s (hot
    paths call `translated` in an ``except`` clause instead: the same rules, no generator).
    """
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        mapped = translated(exc, stream_id)
        if mapped is exc:
            raise
        raise mapped from exc


def translated(exc: BaseException, stream_id: str | None = None) -> BaseException:
    """Returns the toolkit's error for a driver error, or ``exc`` itself when none applies.

    The caller raises the result ``from exc`` (or re-raises ``exc`` when it is returned).
    """
    if isinstance(exc, EventStoreError):
        return exc
    if isinstance(exc, psycopg.errors.UniqueViolation):
        if exc.diag.constraint_name == "events_event_id_key":
            return DuplicateEventIdError(stream_id or "", [])
        return exc
    if isinstance(exc, psycopg.errors.DataError):  # e.g. a snapshot state that is not JSON
        return InvalidArgumentError(f"Postgres refused the data: {exc}")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return PermissionDeniedError(
            f"the database refused: {exc.diag.message_primary} (see `eventstore grants`)"
        )
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return SchemaNotMigratedError(
            f"event store tables not found ({exc.diag.message_primary}): run `eventstore "
            "migrate`, or `alembic upgrade heads` where your alembic tree runs the event "
            "store's revisions; check the store's schema= too"
        )
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return DatabaseUnavailableError(f"no database connection in time: {exc}")
    if isinstance(exc, psycopg.OperationalError):
        # psycopg puts SQLSTATE class 40 (40001 serialization, 40P01 deadlock) directly
        # under OperationalError, so the class is told by its code.
        if (exc.sqlstate or "").startswith("40"):
            return TransactionConflictError(f"transaction aborted by Postgres: {exc}")
        if not _is_connection_loss(exc):
            return exc  # a statement or lock timeout, a cancel: not an outage
        return DatabaseUnavailableError(f"database unavailable: {exc}")
    return exc


# SQLSTATE class 08 (connection exception) and the server shutting down or starting up.
_LOST: Final = ("57P01", "57P02", "57P03")


def _is_connection_loss(exc: psycopg.OperationalError) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _LOST
