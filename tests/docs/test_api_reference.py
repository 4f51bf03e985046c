"""The API reference (docs/reference/api/, rendered by mkdocstrings) covers the public API.

Each public name must have a ``::: package.Name`` directive on a reference page, and the
built site must carry its entry; the store's constructor options must be in the table
that explains them. `make docs` builds the same site with warnings as errors.
"""

from __future__ import annotations

import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import eventstore
import eventstore.subscriptions
import outbox
import projections

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "reference" / "api"
DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)
PACKAGES = {
    "eventstore": eventstore.__all__,
    "eventstore.subscriptions": eventstore.subscriptions.__all__,
    "projections": projections.__all__,
    "outbox": outbox.__all__,
}
PUBLIC = sorted(f"{package}.{name}" for package, names in PACKAGES.items() for name in names)


def directives() -> dict[str, str]:
    """Returns each ``:::`` target of the reference pages, with the page it is on."""
    return {
        target: page.name
        for page in sorted(API.glob("*.md"))
        for target in DIRECTIVE.findall(page.read_text(encoding="utf-8"))
    }


def test_the_public_names_are_listed() -> None:
    # Guards the checks below against an empty or mistyped list.
    assert len(eventstore.__all__) > 50 and "PostgresEventStore" in eventstore.__all__
    assert {"Projection", "handles"} <= set(projections.__all__)
    assert {"Relay", "enqueue"} <= set(outbox.__all__)


def test_every_public_name_has_a_directive() -> None:
    missing = [name for name in PUBLIC if name not in directives()]
    assert not missing, f"no `::: NAME` in docs/reference/api/*.md for {missing}"


def test_every_directive_names_an_object_that_exists() -> None:
    unknown = []
    for target in directives():
        try:
            pkgutil.resolve_name(target)
        except (ImportError, AttributeError):
            unknown.append(target)
    assert not unknown


@pytest.mark.parametrize(
    "store", [eventstore.PostgresEventStore, eventstore.AsyncPostgresEventStore]
)
def test_the_constructor_options_table_explains_every_argument(store: type) -> None:
    text = (API / "stores.md").read_text(encoding="utf-8")
    table = text[text.index("## Constructor options") : text.index(":::")]
    rows = set(re.findall(r"^\| `(\w+)` \|", table, flags=re.MULTILINE))
    arguments = set(inspect.signature(store).parameters)
    assert rows == arguments


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Builds the documentation site, warnings as errors, into a temporary directory."""
    site_dir = tmp_path_factory.mktemp("site")
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return site_dir


def test_the_built_reference_has_an_entry_for_every_public_name(site: Path) -> None:
    anchors = set()
    for page in (site / "reference" / "api").rglob("index.html"):
        anchors |= set(re.findall(r'id="([\w.]+)"', page.read_text(encoding="utf-8")))
    missing = [name for name in PUBLIC if name not in anchors]
    assert not missing, f"not rendered: {missing}"


def test_every_page_is_built_and_in_the_navigation(site: Path) -> None:
    docs = ROOT / "docs"
    nav = (site / "index.html").read_text(encoding="utf-8")
    missing = []
    for page in sorted(docs.rglob("*.md")):
        path = page.relative_to(docs).with_suffix("")
        url = path.parent if path.name == "index" else path
        if not (site / url / "index.html").is_file():
            missing.append(f"{page.name}: not built")
        elif url != Path(".") and f'href="{url.as_posix()}/"' not in nav:
            missing.append(f"{url}/: not in the navigation")
    assert not missing
