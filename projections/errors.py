"""Errors raised by projections, under the event store's one root.

::

    EventStoreError
    └── ProjectionError
        ├── DuplicateProjectionError       one name and version twice in one group; also a
        │                                  ConfigurationError
        ├── ProjectionVersionBackwardsError a version lower than the live one; also a
        │                                  ConfigurationError
        ├── ProjectionTablesMissingError   the version's read-model tables do not exist (run
        │                                  without creating them); also a ConfigurationError
        ├── ProjectionNotFoundError        no such projection, or no such version of it; a
        │                                  LookupError
        └── ProjectionStateError           the version's status forbids the operation
                                           (switching a retired version, dropping the live one)

A projection's definition errors (a handler without an event class, a bad name) are
`ConfigurationError`s raised when the class is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

from eventstore.errors import ConfigurationError, EventStoreError

__all__ = [
    "DuplicateProjectionError",
    "ProjectionError",
    "ProjectionNotFoundError",
    "ProjectionStateError",
    "ProjectionTablesMissingError",
    "ProjectionVersionBackwardsError",
]


class ProjectionError(EventStoreError):
    """Roots the errors of projections."""


class DuplicateProjectionError(ProjectionError, ConfigurationError):
    """Reports two projections of the same name and version in one group."""

    def __init__(self, name: str, version: int) -> None:
        super().__init__(
            f"projection {name!r} version {version} is given twice: a group runs each "
            "version of a projection once (two versions of one name may run side by side)"
        )
        self.name = name
        self.version = version


class ProjectionVersionBackwardsError(ProjectionError, ConfigurationError):
    """Reports a projection version lower than the version live in the database."""

    def __init__(self, name: str, version: int, live: int) -> None:
        super().__init__(
            f"projection {name!r}: version going backwards: the code has version {version}, "
            f"the database serves version {live}; deploy a version above {live} instead"
        )
        self.name = name
        self.version = version
        self.live = live


class ProjectionTablesMissingError(ProjectionError, ConfigurationError):
    """Reports read-model tables of a projection version that do not exist."""

    def __init__(self, name: str, version: int, missing: Sequence[str]) -> None:
        super().__init__(
            f"projection {name!r} version {version}: tables missing: {', '.join(missing)}; "
            "create them (prepare the projection, or run your migrations) before running it"
        )
        self.name = name
        self.version = version
        self.missing = tuple(missing)


class ProjectionNotFoundError(ProjectionError, LookupError):
    """Reports a projection (or a version of it) that is not registered in the database."""

    def __init__(self, name: str, version: int | None = None) -> None:
        what = f"projection {name!r}" + ("" if version is None else f" version {version}")
        super().__init__(f"{what} is not registered in this database")
        self.name = name
        self.version = version


class ProjectionStateError(ProjectionError):
    """Reports an operation that the status of a projection version forbids."""

    def __init__(self, name: str, version: int, status: str, message: str) -> None:
        super().__init__(f"projection {name!r} version {version} is {status}: {message}")
        self.name = name
        self.version = version
        self.status = status
