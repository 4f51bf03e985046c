"""The command line: migrate, check (exit codes) and the embedded default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore.cli import EXIT_NOT_MIGRATED, EXIT_OK, EXIT_UNREACHABLE, main
from eventstore.pytest_plugin import create_database, drop_database


def test_check_reports_migrated_unmigrated_and_unreachable(
    eventstore_server_url: str, eventstore_database_url: str
) -> None:
    assert main(["check", "--url", eventstore_database_url]) == EXIT_OK
    url = create_database(eventstore_server_url, "eventstore_cli_test")
    try:
        assert main(["check", "--url", url]) == EXIT_NOT_MIGRATED
        assert main(["migrate", "--url", url]) == EXIT_OK
        assert main(["check", "--url", url]) == EXIT_OK
    finally:
        drop_database(eventstore_server_url, "eventstore_cli_test")
    assert main(["check", "--url", "postgresql://postgres@127.0.0.1:1/x"]) == EXIT_UNREACHABLE


def test_demo_runs_and_checks_itself(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--url", eventstore_database_url, "--writers", "4"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK: every acknowledged append is in the log" in out
    # The read models (projections.demo): a daemon process beside the writers, its lag, a
    # blue/green rebuild while they append, and the final check against a replay.
    assert "daemon     `eventstore projections run projections.demo:bank_v1`" in out
    assert "lag " in out and "balances v2 building:" in out
    assert "switched   bank.balances v2 is live" in out
    assert "replay     bank.balances v2: 200 rows equal a replay of the log" in out
    assert "replay     bank.daily_totals v1:" in out
    assert "dead       0 dead letters" in out
    assert out.count("SIGTERM): exit 0 in") == 2  # both daemons stopped gracefully
    assert out.rstrip().endswith(
        "PASS: every acknowledged command is in the log; "
        "every read model equals a replay of the log"
    )


@pytest.mark.slow
def test_without_a_database_the_cli_starts_the_embedded_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env["EVENTSTORE_EMBEDDED_DIR"] = str(tmp_path / "pgdata")
    run = [sys.executable, "-m", "eventstore"]
    try:
        migrated = subprocess.run(
            [*run, "migrate"], env=env, capture_output=True, text=True, check=False
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "embedded Postgres" in migrated.stderr
        checked = subprocess.run(
            [*run, "check"], env=env, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stderr
    finally:
        from eventstore.postgres.embedded import stop_embedded_postgres

        stop_embedded_postgres(tmp_path / "pgdata")


@pytest.mark.parametrize("schema", ["", "x" * 64, "nul\x00", "per%cent"])
def test_migrate_refuses_a_schema_name_the_store_would_refuse_in_one_line(
    schema: str, eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--url", eventstore_database_url, "--schema", schema]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
