"""Keeps an application's alembic autogenerate away from the event store's tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventstore.postgres.schema import DEFAULT_SCHEMA

__all__ = ["IncludeObject", "include_object_for"]

IncludeObject = Callable[[Any, "str | None", str, bool, Any], bool]


def include_object_for(*schemas: str) -> IncludeObject:
    """Returns an ``include_object`` hook that excludes every object in the given schemas.

    Pass the result as ``include_object`` to ``context.configure`` in the application's
    ``env.py``. With no argument it excludes the default schema (``eventstore``); name the
    schema (or schemas) you migrated the store into otherwise. Nothing is kept in module
    state, so two alembic trees in one process never see each other's settings.
    """
    excluded = frozenset(schemas or (DEFAULT_SCHEMA,))

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return getattr(table, "schema", None) not in excluded

    return include_object
