"""The documentation's code runs: its ```python blocks, and the project files the how-tos show.

Conventions in ``docs/**/*.md``:

* A ```python block runs. The blocks of one page run in order, in one namespace, against a
  fresh migrated database whose URL is in ``EVENTSTORE_DATABASE_URL``.
* A block right after a ``<!-- file: PATH -->`` line is a file of an example project (an
  alembic ``env.py``, a ``conftest.py``). It does not run on its own: a test below writes
  those files to a temporary directory and runs the project, as its user would.
* A block right after a ``<!-- excerpt: PATH -->`` line shows part of a file of this
  repository (``eventstore/demo/bank.py``). It does not run; its pieces, separated by ``...``
  lines, must appear verbatim and in order in that file.
* Anything else is ```pycon, ```console, ```text, ```sql, ```ini or ```toml, never run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import alembic
import psycopg
import pytest
from alembic import command
from alembic.util import CommandError

import eventstore.migrate
from eventstore import Event, EventRegistry, PostgresEventStore
from eventstore.postgres import sql as _sql
from eventstore.postgres.schema import make_metadata
from eventstore.pytest_plugin import create_database, drop_database

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LANGUAGES = {"python", "pycon", "console", "text", "sql", "ini", "toml"}
FENCE = re.compile(r"^```(.*)$")
FILE_MARKER = re.compile(r"^<!-- file: (\S+) -->$")
EXCERPT_MARKER = re.compile(r"^<!-- excerpt: (\S+) -->$")
ELISION = re.compile(r"^\s*\.\.\.\n", re.MULTILINE)
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
HEADING = re.compile(r"^#+ (.*)$", re.MULTILINE)

# The example project files each page shows, each exercised by a test below.
ALEMBIC_DOC = "how-to/alembic.md"
TESTING_DOC = "how-to/testing.md"
SUBSCRIPTIONS_DOC = "how-to/subscriptions.md"
PROJECT_FILES = {
    SUBSCRIPTIONS_DOC: {"myapp/events.py", "myapp/read_models.py", "myapp/subscriptions.py"},
    ALEMBIC_DOC: {
        "alembic.ini",
        "alembic/env.py",
        "alembic/versions/5f1c0a6b2d3e_orders.py",
        "migrate_db.py",
    },
    TESTING_DOC: {
        "pyproject.toml",
        "accounts.py",
        "conftest.py",
        "test_accounts.py",
        "test_account_aggregate.py",
    },
}
APP_HEAD = "5f1c0a6b2d3e"
(EVENTSTORE_HEAD,) = eventstore.migrate.head_revisions()
REVISION_ID = re.compile(r"\b\d{4}_[a-z_]+\b")


@dataclasses.dataclass(frozen=True)
class Block:
    """Holds one fenced code block of a page."""

    line: int  # of the block's first code line, 1-based
    language: str
    code: str
    file: str | None  # the PATH of a preceding `<!-- file: PATH -->` line
    excerpt: str | None = None  # the PATH of a preceding `<!-- excerpt: PATH -->` line


def parse(doc: Path) -> list[Block]:
    """Returns the fenced code blocks of a Markdown page, in order."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end] != "```":
            end += 1
        assert end < len(lines), f"{doc}:{i + 1}: unclosed code fence"
        marker = FILE_MARKER.match(lines[i - 1]) if i else None
        excerpt = EXCERPT_MARKER.match(lines[i - 1]) if i else None
        code = "".join(line + "\n" for line in lines[i + 1 : end])
        language = opening.group(1).strip()
        blocks.append(
            Block(
                i + 2,
                language,
                code,
                marker.group(1) if marker else None,
                excerpt.group(1) if excerpt else None,
            )
        )
        i = end + 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def name(doc: Path) -> str:
    return doc.relative_to(DOCS).as_posix()


def runnable(doc: Path) -> list[Block]:
    return [
        b for b in parse(doc) if b.language == "python" and b.file is None and b.excerpt is None
    ]


def project_files(page: str) -> dict[str, str]:
    return {b.file: b.code for b in parse(DOCS / page) if b.file is not None}


def write_project(page: str, directory: Path) -> Path:
    for path, text in project_files(page).items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return directory


def test_the_docs_exist() -> None:
    assert {name(p) for p in pages()} >= {
        "index.md",
        "tutorial.md",
        "tutorial-outbox.md",
        "how-to/alembic.md",
        "how-to/transactions.md",
        "how-to/testing.md",
        "reference/errors.md",
        "reference/cli.md",
        "discussions/append.md",
        "discussions/sync-and-async.md",
        "how-to/aggregates.md",
        "how-to/upcasting.md",
        "how-to/metadata.md",
    }


@pytest.mark.parametrize("doc", pages(), ids=name)
def test_code_fences_are_labelled_and_start_the_line(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    indented = [
        n
        for n, line in enumerate(text.splitlines(), 1)
        if line.lstrip() != line and line.lstrip().startswith("```")
    ]
    assert not indented, f"indented fences are not collected, lines {indented}"
    unknown = [(b.line - 1, b.language) for b in parse(doc) if b.language not in LANGUAGES]
    assert not unknown, f"fences need one of {sorted(LANGUAGES)}: {unknown}"


def anchors(doc: Path) -> set[str]:
    """Returns the anchors GitHub gives a page's headings."""
    headings = HEADING.findall(re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.M | re.S))
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", pages(), ids=name)
def test_links_point_at_existing_pages_and_headings(doc: Path) -> None:
    broken = []
    for path, anchor in LINK.findall(doc.read_text(encoding="utf-8")):
        if "://" in path:
            continue
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists() or (anchor and anchor not in anchors(target)):
            broken.append(f"{path}#{anchor}" if anchor else path)
    assert not broken


@pytest.mark.parametrize("doc", pages(), ids=name)
def test_shown_command_output_names_the_current_migration_heads(doc: Path) -> None:
    shown = {
        revision
        for block in parse(doc)
        if block.language in ("console", "text")
        for revision in REVISION_ID.findall(block.code)
    }
    assert shown <= eventstore.migrate.head_revisions()


def sql_text(statement: str) -> str:
    """Returns a statement with identifiers unquoted and whitespace normalised."""
    text = re.sub(r"\s+", " ", statement.replace('"', "")).strip()
    return re.sub(r"\s+\)", ")", re.sub(r"\(\s+", "(", text))


def test_the_append_statement_shown_is_the_one_sent() -> None:
    shown = next(b for b in parse(DOCS / "discussions/append.md") if b.language == "sql")
    assert sql_text(shown.code) == sql_text(_sql.render("eventstore").append.exact.decode())


@pytest.mark.parametrize("doc", [p for p in pages() if any(b.excerpt for b in parse(p))], ids=name)
def test_excerpts_match_the_files_they_quote(doc: Path) -> None:
    for block in parse(doc):
        if block.excerpt is None:
            continue
        source = (ROOT / block.excerpt).read_text(encoding="utf-8")
        start = 0
        for piece in ELISION.split(block.code):
            found = source.find(piece, start)
            assert found >= 0, f"{name(doc)}:{block.line}: not in {block.excerpt}:\n{piece}"
            start = found + len(piece)


def test_every_project_file_the_docs_show_is_exercised() -> None:
    shown = {name(p): {b.file for b in parse(p) if b.file} for p in pages()}
    assert {page: files for page, files in shown.items() if files} == PROJECT_FILES


@pytest.mark.parametrize("doc", [p for p in pages() if runnable(p)], ids=name)
def test_python_blocks_run_in_order(
    doc: Path, eventstore_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSTORE_DATABASE_URL", eventstore_database_url)
    # A real module, so that classes defined in the page have a home (pydantic, pickling).
    module = types.ModuleType("docs_" + re.sub(r"\W", "_", name(doc)))
    module.__file__ = str(doc)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in runnable(doc):
        # Padding keeps line numbers, so a traceback points at the Markdown line.
        code = compile("\n" * (block.line - 1) + block.code, str(doc), "exec")
        exec(code, module.__dict__)


# The alembic how-to: a throwaway application alembic tree with the event store's revisions.


@pytest.fixture
def scratch_database(eventstore_server_url: str) -> Iterator[str]:
    """Yields the URL of a new, empty (unmigrated) database, dropped afterwards."""
    database = f"eventstore_docs_{uuid.uuid4().hex[:12]}"
    url = create_database(eventstore_server_url, database)
    try:
        yield url
    finally:
        drop_database(eventstore_server_url, database)


@pytest.fixture
def alembic_project(tmp_path: Path) -> Path:
    project = write_project(ALEMBIC_DOC, tmp_path / "app")
    # `alembic init` puts this template beside env.py; `alembic revision` renders it.
    template = Path(alembic.__file__).parent / "templates" / "generic" / "script.py.mako"
    shutil.copy(template, project / "alembic" / "script.py.mako")
    return project


def psycopg_sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"docs_{path.stem}_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def app_versions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version_num FROM public.alembic_version").fetchall()
    return {r[0] for r in rows}


def event_store_tables(schema: str) -> set[str]:
    return {table.name for table in make_metadata(schema).tables.values()}


def tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        ).fetchall()
    return {r[0] for r in rows}


class Noted(Event):
    event_type: ClassVar[str] = "docs.Noted"


def assert_store_works(url: str, schema: str) -> None:
    with PostgresEventStore(url, registry=EventRegistry([Noted]), schema=schema) as store:
        assert store.append("s-1", Noted()).last_version == 1


@pytest.mark.parametrize(
    "schema_from", ["default", "config attribute", "alembic.ini option", "environment"]
)
def test_the_alembic_tree_upgrades_both_heads(
    alembic_project: Path,
    scratch_database: str,
    monkeypatch: pytest.MonkeyPatch,
    schema_from: str,
) -> None:
    monkeypatch.setenv("DATABASE_URL", psycopg_sqlalchemy_url(scratch_database))
    monkeypatch.delenv("EVENTSTORE_SCHEMA", raising=False)
    migrate_db = load_module(alembic_project / "migrate_db.py")
    schema = "eventstore"
    if schema_from == "config attribute":
        schema = "billing_events"
        config = migrate_db.alembic_config(eventstore_schema=schema)
    elif schema_from == "alembic.ini option":
        schema = "journal"
        config = migrate_db.alembic_config()
        config.set_main_option("eventstore_schema", schema)  # as a line in [alembic]
    else:
        if schema_from == "environment":
            schema = "ledger"
            monkeypatch.setenv("EVENTSTORE_SCHEMA", schema)
        config = migrate_db.alembic_config()

    command.upgrade(config, "heads")

    assert app_versions(scratch_database) == {APP_HEAD, EVENTSTORE_HEAD}
    assert tables(scratch_database, "public") == {"alembic_version", "orders"}
    assert tables(scratch_database, schema) == event_store_tables(schema)
    assert_store_works(scratch_database, schema)
    command.check(config)  # raises when autogenerate would touch anything


def test_new_app_revisions_name_their_head(
    alembic_project: Path, scratch_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", psycopg_sqlalchemy_url(scratch_database))
    monkeypatch.delenv("EVENTSTORE_SCHEMA", raising=False)
    config = load_module(alembic_project / "migrate_db.py").alembic_config()
    command.upgrade(config, "heads")
    with pytest.raises(CommandError, match="Multiple heads"):
        command.revision(config, "add customers", autogenerate=True)
    script = command.revision(config, "add customers", autogenerate=True, head="app@head")
    assert script is not None and not isinstance(script, list)
    assert script.down_revision == APP_HEAD
    source = Path(script.path).read_text(encoding="utf-8")
    assert "op." not in source  # nothing to do: the event store's tables are left alone


@pytest.mark.slow
def test_the_alembic_command_finds_the_revisions_of_an_installed_package(
    alembic_project: Path, scratch_database: str, installed_wheel: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTSTORE_SCHEMA"}
    # The unpacked wheel goes ahead of this checkout's editable install.
    env["PYTHONPATH"] = str(installed_wheel)
    env["DATABASE_URL"] = psycopg_sqlalchemy_url(scratch_database)

    def alembic_cli(*args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-W", "error", "-m", "alembic", *args],
            cwd=alembic_project,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout + run.stderr

    heads = alembic_cli("heads")
    assert f"{APP_HEAD} (app) (head)" in heads
    assert f"{EVENTSTORE_HEAD} (eventstore) (head)" in heads
    alembic_cli("-x", "eventstore_schema=billing_events", "upgrade", "heads")
    assert app_versions(scratch_database) == {APP_HEAD, EVENTSTORE_HEAD}
    assert tables(scratch_database, "billing_events") == event_store_tables("billing_events")
    assert "No new upgrade operations detected" in alembic_cli(
        "-x", "eventstore_schema=billing_events", "check"
    )


# The testing how-to: a small project whose tests use the pytest plugin's fixtures.


def test_the_testing_how_to_passes_under_pytest(tmp_path: Path, eventstore_server_url: str) -> None:
    project = write_project(TESTING_DOC, tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["EVENTSTORE_TEST_DATABASE_URL"] = eventstore_server_url
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), summary


# The subscriptions how-to: its daemon runs, handles, and stops gracefully on SIGTERM.


def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_subscription_daemon_handles_events_and_stops_on_sigterm(
    tmp_path: Path, eventstore_database_url: str
) -> None:
    project = write_project(SUBSCRIPTIONS_DOC, tmp_path / "app")
    (project / "myapp" / "__init__.py").write_text("")
    with psycopg.connect(eventstore_database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE balances (account text PRIMARY KEY, balance bigint NOT NULL)")
    sys.path.insert(0, str(project))
    try:
        from myapp.events import Deposited, registry  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(project))
        for module in [m for m in sys.modules if m.split(".")[0] == "myapp"]:
            del sys.modules[module]
    with PostgresEventStore(eventstore_database_url, registry=registry) as store:
        store.append("account-1", [Deposited(amount=3), Deposited(amount=4)])
    env = {**os.environ, "PYTHONPATH": str(project)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "eventstore", "subscriptions", "run", "myapp.subscriptions:group",
         "--url", eventstore_database_url, "--poll-interval", "0.1"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def balance() -> Any:
            with psycopg.connect(eventstore_database_url) as conn:
                return conn.execute("SELECT balance FROM balances").fetchone()

        wait_until(
            lambda: balance() == (7,) or daemon.poll() is not None, "the daemon to handle events"
        )
        assert daemon.poll() is None, daemon.communicate()[0]
        daemon.send_signal(signal.SIGTERM)
        output, _ = daemon.communicate(timeout=30)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, output
    with psycopg.connect(eventstore_database_url) as conn:
        owners = conn.execute("SELECT owner FROM eventstore.checkpoints").fetchall()
    assert owners == [(None,)]  # released on the way out, for the next runner at once
