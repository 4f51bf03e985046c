"""The bank example's read models and the part of ``eventstore demo`` that runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from eventstore import ConfigurationError, PostgresEventStore
from eventstore.demo import bank, installed_extensions, run_demo
from projections.cli import load_group
from projections.demo import Balances, BankReadModels, DailyTotals, extension
from projections.testing import catch_up


def test_the_demo_groups_name_the_version_of_balances_they_run() -> None:
    group = load_group("projections.demo:bank_v7")
    assert [(p.name, p.version) for p in group.projections] == [
        ("bank.balances", 7),
        ("bank.daily_totals", 1),
    ]
    assert group.get("bank.balances").table("balances").name == "balances_v7"
    for wrong in ("bank_v0", "bank_v", "bank_v1x", "nope"):
        with pytest.raises(ConfigurationError, match="cannot import"):
            load_group(f"projections.demo:{wrong}")


def test_projections_adds_the_read_models_to_the_demo_through_the_entry_point() -> None:
    assert ("projections", extension) in installed_extensions()


def append_bank_events(url: str) -> None:
    with PostgresEventStore(url, registry=bank.registry) as store:
        store.append("account-a", [bank.AccountOpened(owner="a"), bank.MoneyDeposited(amount=10)])
        store.append("account-a", bank.MoneyWithdrawn(amount=3))
        store.append("account-b", [bank.AccountOpened(owner="b"), bank.MoneyDeposited(amount=5)])
        store.append("elsewhere-c", bank.MoneyDeposited(amount=1000))  # not an account stream


def test_the_check_finds_every_row_that_differs_from_a_replay_of_the_log(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = eventstore_database_url
    append_bank_events(url)
    for projection in (Balances(), DailyTotals()):
        catch_up(url, projection, registry=bank.registry)
    part = BankReadModels(url, "eventstore")
    try:
        assert part.verify()
        out = capsys.readouterr().out
        assert "bank.balances v1: 2 rows equal a replay of the log (5 events)" in out
        assert "bank.daily_totals v1: 1 row equals a replay of the log (5 events)" in out
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE bank.balances_v1 SET balance = 8 WHERE account = 'account-a'")
            conn.execute("DELETE FROM bank.balances_v1 WHERE account = 'account-b'")
            conn.execute("UPDATE bank.daily_totals_v1 SET deposited = deposited + 1")
        assert not part.verify()
        out = capsys.readouterr().out
        assert "bank.balances v1: 1 row DIFFER FROM a replay" in out
        assert "account-a: replay {'account': 'account-a', 'balance': 7, 'movements': 2}" in out
        assert "read model {'account': 'account-a', 'balance': 8, 'movements': 2}" in out
        assert "account-b: replay {'account': 'account-b', 'balance': 5, 'movements': 1}" in out
        assert "read model None" in out
        assert "'deposited': 15" in out and "'deposited': 16" in out
    finally:
        part.stop()


@pytest.mark.slow
def test_the_demo_runs_again_on_the_same_database_with_the_next_version(
    eventstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = eventstore_database_url
    run_demo(url, schema="eventstore", writers=2, accounts=20)
    first = capsys.readouterr().out
    assert "switched   bank.balances v2 is live" in first
    assert "dropped    bank.balances v1: bank.balances_v1" in first
    run_demo(url, schema="eventstore", writers=2, accounts=20)
    second = capsys.readouterr().out
    assert "runs bank.balances v2 and bank.daily_totals v1" in second
    assert "switched   bank.balances v3 is live" in second
    assert "replay     bank.balances v3: 40 rows equal a replay of the log" in second
    assert "dropped    bank.balances v2: bank.balances_v2" in second
    assert second.rstrip().endswith(
        "PASS: every acknowledged command is in the log; "
        "every read model equals a replay of the log"
    )
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'bank' "
            "ORDER BY table_name"
        ).fetchall()
    assert tables == [("balances",), ("balances_v3",), ("daily_totals",), ("daily_totals_v1",)]


@pytest.mark.slow
def test_the_demo_passes_on_the_embedded_server_with_no_database_configured(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    env["EVENTSTORE_EMBEDDED_DIR"] = str(tmp_path / "pgdata")
    command = [sys.executable, "-m", "eventstore", "demo", "--writers", "2", "--accounts", "20"]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    finally:
        from eventstore.postgres.embedded import stop_embedded_postgres

        stop_embedded_postgres(tmp_path / "pgdata")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "starting the embedded Postgres" in done.stderr
    assert "replay     bank.balances v2: 20 rows equal a replay of the log" in done.stdout
    assert done.stdout.rstrip().endswith("every read model equals a replay of the log")
