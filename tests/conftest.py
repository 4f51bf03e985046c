from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

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
