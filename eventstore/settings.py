"""Settings read from the environment; nothing is read or created at import time."""

from __future__ import annotations

import os

__all__ = ["database_url_from_env"]

URL_VARIABLES = ("EVENTSTORE_DATABASE_URL", "DATABASE_URL")


def database_url_from_env() -> str | None:
    """Returns the database URL from ``EVENTSTORE_DATABASE_URL``, then ``DATABASE_URL``."""
    for name in URL_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None
