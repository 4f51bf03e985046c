"""The shipped migrations equal the metadata, round-trip, and work from a built wheel."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from eventstore import EventRegistry, PostgresEventStore, migrate
from eventstore.postgres.alembic import include_object_for
from eventstore.postgres.connections import sqlalchemy_url
from eventstore.postgres.schema import make_metadata
from eventstore.pytest_plugin import create_database, drop_database
from projections import sql as projection_sql
from tests.support import Deposited

ROOT = Path(__file__).resolve().parents[2]


def schema_diff(url: str, schema: str = "eventstore") -> list[Any]:
    engine = sa.create_engine(sqlalchemy_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "include_schemas": True,
                    "include_name": lambda name, type_, parent: (
                        name == schema if type_ == "schema" else name != "alembic_version"
                    ),
                    "compare_type": True,
                    "compare_server_default": True,
                },
            )
            return list(compare_metadata(context, make_metadata(schema)))
    finally:
        engine.dispose()


def tables(url: str, schema: str = "eventstore") -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", [schema]
        ).fetchall()
    return {r[0] for r in rows}


@pytest.fixture
def empty_database(eventstore_server_url: str) -> Any:
    # A name of its own: tests run in several processes at once (`make test`).
    name = f"eventstore_migrations_test_{uuid.uuid4().hex[:12]}"
    yield create_database(eventstore_server_url, name)
    drop_database(eventstore_server_url, name)


ALL_TABLES = {
    "alembic_version",
    "streams",
    "events",
    "snapshots",
    "checkpoints",
    "runners",
    "dead_letters",
    "projections",
    "projection_modes",
    "inbox",
}


def test_migrated_database_equals_the_metadata(eventstore_database_url: str) -> None:
    assert schema_diff(eventstore_database_url) == []


def test_tables_are_not_analyzed_while_tiny(eventstore_database_url: str) -> None:
    with psycopg.connect(eventstore_database_url) as conn:
        rows = conn.execute(
            "SELECT relname, reloptions FROM pg_class JOIN pg_namespace n "
            "ON n.oid = relnamespace WHERE nspname = 'eventstore' AND relkind = 'r' "
            "AND relname <> 'alembic_version'"
        ).fetchall()
    assert {name: options for name, options in rows} == {
        name: ["autovacuum_analyze_threshold=10000"] for name in ALL_TABLES - {"alembic_version"}
    }


def test_downgrade_then_upgrade_round_trips(eventstore_database_url: str) -> None:
    migrate.downgrade(eventstore_database_url, "base")
    assert tables(eventstore_database_url) == {"alembic_version"}
    assert migrate.current_revisions(eventstore_database_url) == set()
    migrate.upgrade(eventstore_database_url)
    assert tables(eventstore_database_url) == ALL_TABLES
    assert migrate.is_up_to_date(eventstore_database_url)
    assert schema_diff(eventstore_database_url) == []


# The statement `prepare` ran before 0008 existed (default constraint names, no storage
# option), and the one it runs now on a database not migrated that far.
OLD_CREATE_MODES = (
    "CREATE TABLE eventstore.projection_modes (name text NOT NULL, version integer NOT NULL, "
    "inline_from text, inline_until text, changed_at timestamptz NOT NULL DEFAULT now(), "
    "PRIMARY KEY (name, version), CHECK (inline_until IS NULL OR inline_from IS NOT NULL))"
)


@pytest.mark.parametrize(
    "create",
    [OLD_CREATE_MODES, projection_sql.render("eventstore").create_modes.decode()],
    ids=["before-0008", "now"],
)
def test_0008_keeps_a_modes_table_that_prepare_created(
    eventstore_database_url: str, create: str
) -> None:
    migrate.downgrade(eventstore_database_url, "0007_snapshot_event")
    assert "projection_modes" not in tables(eventstore_database_url)
    with psycopg.connect(eventstore_database_url) as conn:
        conn.execute(create)
        conn.execute(
            "INSERT INTO eventstore.projection_modes (name, version, inline_from) "
            "VALUES ('tally', 1, '10:10:')"
        )
    migrate.upgrade(eventstore_database_url)
    assert migrate.is_up_to_date(eventstore_database_url)
    assert schema_diff(eventstore_database_url) == []
    with psycopg.connect(eventstore_database_url) as conn:
        rows = conn.execute(
            "SELECT name, version, inline_from FROM eventstore.projection_modes"
        ).fetchall()
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE oid = 'eventstore.projection_modes'::regclass"
        ).fetchone()
        constraints = conn.execute(
            # Postgres 18 also lists NOT NULL constraints (contype 'n'): not ours to compare.
            "SELECT conname FROM pg_constraint WHERE contype <> 'n' "
            "AND conrelid = 'eventstore.projection_modes'::regclass ORDER BY conname"
        ).fetchall()
    assert rows == [("tally", 1, "10:10:")]
    assert options == (["autovacuum_analyze_threshold=10000"],)
    assert constraints == [("projection_modes_check",), ("projection_modes_pkey",)]


def test_upgrade_twice_is_a_no_op(eventstore_database_url: str) -> None:
    migrate.upgrade(eventstore_database_url)
    assert migrate.is_up_to_date(eventstore_database_url)


def test_a_custom_schema_holds_everything(empty_database: str) -> None:
    migrate.upgrade(empty_database, schema="my events")
    assert tables(empty_database, "my events") == ALL_TABLES
    assert tables(empty_database, "eventstore") == set()
    assert schema_diff(empty_database, "my events") == []
    registry = EventRegistry([Deposited])
    with PostgresEventStore(empty_database, registry=registry, schema="my events") as store:
        store.append("s", Deposited(amount=1, currency="EUR"))
        assert [e.version for e in store.read_stream("s")] == [1]


def test_the_application_alembic_version_table_is_untouched(empty_database: str) -> None:
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('app_head')")
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version_num FROM public.alembic_version").fetchall()
    assert rows == [("app_head",)]


def test_include_object_keeps_app_autogenerate_away(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    app_metadata = sa.MetaData()
    sa.Table("orders", app_metadata, sa.Column("id", sa.Integer, primary_key=True))
    engine = sa.create_engine(sqlalchemy_url(empty_database), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_schemas": True, "include_object": include_object_for()}
        )
        diff = compare_metadata(context, app_metadata)
    engine.dispose()
    touched = {str(d[1].name) for d in diff if d[0] in ("add_table", "remove_table")}
    assert touched == {"orders"}


@pytest.mark.slow
def test_migrate_works_from_the_built_wheel(
    tmp_path: Path, empty_database: str, built_wheel: Path, installed_wheel: Path
) -> None:
    with zipfile.ZipFile(built_wheel) as zf:
        names = set(zf.namelist())
    assert "eventstore/_migrations/env.py" in names
    assert "eventstore/_migrations/versions/0001_event_log.py" in names
    assert "eventstore/py.typed" in names
    assert "eventstore/demo/bank.py" in names
    site = installed_wheel
    # The unpacked wheel goes first on sys.path, ahead of this checkout's editable install.
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(site)!r})
        from eventstore.migrate import migrations_dir
        from eventstore.cli import main
        assert str(migrations_dir()).startswith({str(site)!r}), migrations_dir()
        sys.exit(main(["migrate", "--url", sys.argv[1]]))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, empty_database],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert migrate.is_up_to_date(empty_database)
