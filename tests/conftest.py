from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Final

import pytest

from eventstore import EventRegistry
from tests.support import make_registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return make_registry()


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Returns the project's wheel, built once per test session."""
    build = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(build), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = build.glob("eventkeeper-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_wheel(built_wheel: Path) -> Path:
    """Returns a directory holding the unpacked wheel, as a regular install would have it."""
    site = built_wheel.parent / "site"
    with zipfile.ZipFile(built_wheel) as archive:
        archive.extractall(site)
    return site


def _uses_the_shared_brokers(item: pytest.Item) -> bool:
    """The outbox tests and the outbox pages' code use the machine's RabbitMQ, NATS and
    Redis, and one of them stops RabbitMQ for ten seconds."""
    path = Path(str(item.path))
    return "outbox" in path.parts or (path.parent.name == "docs" and "outbox" in item.nodeid)


# Daemon processes killed, frozen and restarted under load, with deadlines: timing is part
# of what they check (a restart must cut transactions in flight, a stop must end within its
# grace), so they run alone, after the rest.
_ALONE: Final = (
    "tests/reliability/",
    "tests/projections/test_crashes.py",
    "tests/outbox/test_reliability.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `make test` runs the tests in two processes (pytest-xdist, `--dist loadgroup`), then
    # the `serial` ones in one. In the first part every test that uses the shared brokers
    # runs in the same process, one at a time, so no test cuts another's broker. Each test
    # has a database of its own anyway.
    for item in items:
        if any(part in item.nodeid for part in _ALONE):
            item.add_marker(pytest.mark.serial)
        if _uses_the_shared_brokers(item):
            item.add_marker(pytest.mark.xdist_group("brokers"))
