"""The command line's help, version and URL handling, without a database."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eventstore.cli import EXIT_OK, build_parser, main
from eventstore.errors import ConfigurationError
from eventstore.postgres.connections import describe_url, libpq_url, mask_url, sqlalchemy_url
from eventstore.postgres.inspection import prefix_upper_bound, stream_query


def test_bare_eventstore_prints_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith("usage: eventstore")
    for command in ("migrate", "check", "read", "streams", "subscriptions"):
        assert f"    {command}" in out
    assert "Exit codes: 0 ok" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("eventstore (eventkeeper) ")


def _helps(parser: object, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    import argparse

    assert isinstance(parser, argparse.ArgumentParser)
    found: dict[tuple[str, ...], object] = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(_helps(child, (*path, name)))
    return found


def test_every_eventstore_option_has_help_and_shows_its_default() -> None:
    import argparse

    own = ("migrate", "check", "demo", "grants", "embedded", "read", "streams", "subscriptions")
    for path, parser in _helps(build_parser()).items():
        if not path or path[0] not in own:
            continue  # projections and outbox register their own parsers
        assert isinstance(parser, argparse.ArgumentParser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
                continue
            assert action.help, f"eventstore {' '.join(path)} {action.dest}: no help"
        text = parser.format_help()
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
                assert f"default: {action.default}" in " ".join(text.split()), (path, action.dest)


def test_help_does_not_import_alembic() -> None:
    code = (
        "import sys; from eventstore.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('alembic', 'eventstore.migrate') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("postgresql://app@db/app?password=s3cret&x=1", "postgresql://app@db/app?password=***&x=1"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgresql+psycopg://a:b:c@h/d", "postgresql+psycopg://a:***@h/d"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "the database URL is empty"),
        ("postgresql://a:s3cret@h:port/d", "malformed database URL 'postgresql://a:***@h:port/d'"),
        ("postgresql://a:s3cret@[::1/d", "malformed database URL 'postgresql://a:***@[::1/d'"),
        ("mysql://a:s3cret@h/d", "not a Postgres URL: 'mysql://a:***@h/d'"),
        ("postgresql:/h/d", "not a Postgres URL: 'postgresql:/h/d'"),
        ("postgresql://h/d?nope=1", 'invalid URI query parameter: "nope"'),
    ],
)
def test_a_malformed_url_shows_the_input_masked(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        libpq_url(url)
    assert message in str(raised.value)
    assert "s3cret" not in str(raised.value) and "\n" not in str(raised.value)


def test_well_formed_urls_pass() -> None:
    assert libpq_url("postgres://u@h:5433/d?sslmode=disable") == (
        "postgresql://u@h:5433/d?sslmode=disable"
    )
    assert sqlalchemy_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert describe_url("postgresql+psycopg://u:pw@h:5433/d") == "u@h:5433/d"
    assert describe_url("postgresql:///d") == "localhost:5432/d"


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [("account-", "account."), ("a", "b"), ("z\U0010ffff", "{"), ("\ud7ff", "\ue000"), ("", None)],
)
def test_prefix_upper_bound(prefix: str, upper: str | None) -> None:
    assert prefix_upper_bound(prefix) == upper


def test_a_prefix_is_a_range_only_under_code_point_order() -> None:
    ranged, params = stream_query("eventstore", "order-", code_point_order=True)
    assert "stream_id >= %s AND stream_id < %s" in ranged.as_string(None)
    assert params == ["order-", "order."]
    scanned, params = stream_query("eventstore", "order-", code_point_order=False, after="order-9")
    assert "starts_with(stream_id, %s) AND stream_id > %s" in scanned.as_string(None)
    assert params == ["order-", "order-9"]
