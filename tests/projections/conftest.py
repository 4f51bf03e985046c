from __future__ import annotations

import psycopg
import pytest

from eventstore import EventRegistry
from tests.projections.app import SIDE_EFFECTS, make_registry


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return make_registry()


@pytest.fixture
def url(eventstore_database_url: str) -> str:
    """Returns a fresh migrated database, with the side-effects table `Tally` writes to."""
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute(SIDE_EFFECTS)
    return eventstore_database_url
