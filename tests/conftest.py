from __future__ import annotations

import pytest

from eventstore import EventRegistry
from tests.support import make_registry


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return make_registry()
