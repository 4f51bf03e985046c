"""Events and helpers shared by the project's own tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from eventstore import Event, EventRegistry


class Opened(Event):
    event_type: ClassVar[str] = "test.Opened"
    owner: str


class Deposited(Event):
    event_type: ClassVar[str] = "test.Deposited"
    schema_version: ClassVar[int] = 3
    amount: int
    currency: str
    note: str = ""


class Renamed(Event):
    event_type: ClassVar[str] = "test.Renamed"
    name: str


def make_registry() -> EventRegistry:
    """Returns a registry with the test events and the Deposited v1 -> v3 upcasters."""
    registry = EventRegistry([Opened, Deposited, Renamed])

    @registry.upcaster("test.Deposited", from_version=1)
    def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        # v1 stored cents as "value"; v2 renamed it to "amount".
        return {"amount": data["value"], **{k: v for k, v in data.items() if k != "value"}}

    @registry.upcaster("test.Deposited", from_version=2)
    def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        # v3 added a required currency.
        return {"currency": "EUR", **data}

    return registry


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits for a condition with a deadline, failing the test when it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)
