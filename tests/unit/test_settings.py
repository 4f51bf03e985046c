"""Settings: every EVENTSTORE_* variable read in one place, from the environment or a mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventstore.settings import Settings, database_url_from_env


def test_the_test_server_ignores_a_database_url_that_is_not_postgres() -> None:
    assert Settings.from_env({"DATABASE_URL": "postgresql+psycopg://x/y"}).test_database_url
    assert Settings.from_env({"DATABASE_URL": "postgres://x/y"}).test_database_url
    assert Settings.from_env({"DATABASE_URL": "sqlite:///app.db"}).test_database_url is None
    assert Settings.from_env({"DATABASE_URL": "sqlite:///app.db"}).database_url == (
        "sqlite:///app.db"
    )


def test_the_eventstore_variables_win_over_the_generic_ones() -> None:
    settings = Settings.from_env(
        {
            "EVENTSTORE_DATABASE_URL": "postgresql://a/own",
            "DATABASE_URL": "postgresql://a/app",
            "EVENTSTORE_TEST_DATABASE_URL": " postgresql://a/tests ",
            "EVENTSTORE_SCHEMA": "events",
            "EVENTSTORE_EMBEDDED_DIR": "/tmp/pg",
        }
    )
    assert settings == Settings(
        database_url="postgresql://a/own",
        test_database_url="postgresql://a/tests",
        schema="events",
        embedded_dir=Path("/tmp/pg"),
    )


def test_blank_variables_count_as_unset() -> None:
    assert Settings.from_env({"EVENTSTORE_DATABASE_URL": "  ", "EVENTSTORE_SCHEMA": ""}) == (
        Settings()
    )


def test_the_environment_is_read_when_asked_not_at_import(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EVENTSTORE_DATABASE_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://later/db")
    assert database_url_from_env() == "postgresql://later/db"
