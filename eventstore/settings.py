"""Settings from the environment, read in one place into one frozen object.

Nothing is read at import time: `Settings.from_env()` reads the variables when called, so
a test or a daemon that sets them first sees its own values.

=============================== =====================================================
Variable                        Meaning
=============================== =====================================================
``EVENTSTORE_DATABASE_URL``     the database the store, CLI and demo use (then
                                ``DATABASE_URL``)
``EVENTSTORE_TEST_DATABASE_URL`` the server the pytest plugin creates test databases on
                                (then ``DATABASE_URL`` if it is a Postgres URL)
``EVENTSTORE_SCHEMA``           the schema the shipped migrations create (default
                                ``eventstore``)
``EVENTSTORE_EMBEDDED_DIR``     the embedded server's data directory (default
                                ``./.eventstore/pgdata``)
=============================== =====================================================
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["Settings", "database_url_from_env"]


def _first(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Holds every ``EVENTSTORE_*`` setting; built by `from_env` or directly in code."""

    database_url: str | None = None
    test_database_url: str | None = None
    schema: str | None = None
    embedded_dir: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads the settings from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        embedded = _first(env, "EVENTSTORE_EMBEDDED_DIR")
        return cls(
            database_url=_first(env, "EVENTSTORE_DATABASE_URL", "DATABASE_URL"),
            test_database_url=_test_url(env),
            schema=_first(env, "EVENTSTORE_SCHEMA"),
            embedded_dir=Path(embedded) if embedded else None,
        )


def _test_url(env: Mapping[str, str]) -> str | None:
    for name in ("EVENTSTORE_TEST_DATABASE_URL", "DATABASE_URL"):
        value = _first(env, name)
        if value and is_postgres_url(value):  # DATABASE_URL may well be sqlite://...
            return value
    return None


def is_postgres_url(url: str) -> bool:
    """Tells whether a URL names a Postgres server (any SQLAlchemy driver suffix)."""
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def database_url_from_env() -> str | None:
    """Returns the database URL from ``EVENTSTORE_DATABASE_URL``, then ``DATABASE_URL``."""
    return Settings.from_env().database_url
