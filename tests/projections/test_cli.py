"""The ``eventstore projections`` commands: rebuild with progress, status, list, switch, drop."""

from __future__ import annotations

import asyncio

import pytest

from eventstore.cli import EXIT_ERROR, EXIT_OK, build_parser, main
from tests.projections.app import Tally, TallyV2, read_model, replay_of_log
from tests.projections.support import append_ticks, running, versions

TARGET = "tests.projections.app:group"


def test_the_projections_command_comes_from_the_entry_point() -> None:
    args = build_parser().parse_args(["projections", "drop", "tally", "--version", "1"])
    assert (args.command, args.action, args.name, args.version) == (
        "projections",
        "drop",
        "tally",
        1,
    )


def test_rebuild_builds_the_new_version_with_progress_then_switches(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    append_ticks(url, streams=20, per_stream=30)
    asyncio.run(_serve_version_1(url))
    monkeypatch.setenv("PROJECTION_VERSIONS", "1,2")  # the group holds both; v2 is rebuilt
    code = main(["projections", "rebuild", "tally", "--target", TARGET, "--url", url])
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "rebuilding tally v2" in err and "600/600" in err
    assert "rebuilt tally v2: 600 events in" in out
    assert "switched: tally v2 is live" in out
    assert versions(url) == [(1, "retired"), (2, "live")]
    assert read_model(url) == replay_of_log(url)
    code = main(["projections", "rebuild", "tally", "--target", TARGET, "--url", url])
    assert code == EXIT_ERROR
    assert "bump the version" in capsys.readouterr().err


async def _serve_version_1(url: str) -> None:
    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up("tally", timeout=30)


async def test_status_list_switch_and_drop_on_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_ticks(url, streams=3, per_stream=4)

    async def run(*args: str) -> int:
        return await asyncio.to_thread(main, ["projections", *args, "--url", url])

    async with running(url, Tally(), TallyV2(), auto_switch=False) as manager:
        await manager.wait_until_caught_up("tally", version=2, timeout=30)
        assert await run("status") == EXIT_OK
        status = capsys.readouterr().out.splitlines()
        assert status[0].split() == [
            "projection", "version", "status", "shards", "handled", "lag", "lag", "s", "dead"
        ]  # fmt: skip
        assert status[1].split() == ["tally", "1", "live", "2", "running", "12", "0", "0.0", "0"]
        assert status[2].split()[:4] == ["tally", "2", "building", "2"]
        assert await run("switch", "tally") == EXIT_OK
        assert capsys.readouterr().out == "tally v2 is live\n"
    assert await run("list") == EXIT_OK
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:3] == ["tally", "1", "retired"]
    assert listed[1].endswith("read_models.tally_v1")
    assert await run("drop", "tally", "--version", "2") == EXIT_ERROR
    assert "is live: the live version is never dropped" in capsys.readouterr().err
    assert await run("drop", "tally", "--version", "1") == EXIT_OK
    assert capsys.readouterr().out == "dropped tally v1: read_models.tally_v1\n"
    assert await run("status", "nobody") == EXIT_ERROR
    assert "projection 'nobody' is not registered" in capsys.readouterr().err


def test_run_refuses_missing_tables_with_a_clear_error(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["projections", "run", TARGET, "--url", url, "--no-create-tables"])
    assert code == EXIT_ERROR
    assert capsys.readouterr().err == (
        "error: projection 'tally' version 1: tables missing: read_models.tally_v1; create "
        "them (prepare the projection, or run your migrations) before running it\n"
    )


async def test_mode_shows_and_switches_inline_and_back(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    append_ticks(url, streams=2, per_stream=3)

    async def run(*args: str) -> int:
        return await asyncio.to_thread(main, ["projections", *args, "--url", url])

    async with running(url, Tally()) as manager:
        await manager.wait_until_caught_up("tally", timeout=30)
        assert await run("mode", "tally") == EXIT_OK
        assert capsys.readouterr().out == "tally: daemon\n"
        assert await run("mode", "tally", "inline") == EXIT_OK
        assert capsys.readouterr().out == "tally: inline\n"
        assert await manager.mode("tally") == "inline"
        assert await run("mode", "tally", "daemon") == EXIT_OK
        assert capsys.readouterr().out == "tally: daemon\n"
    assert await run("mode", "nobody") == EXIT_ERROR
    assert "projection 'nobody' is not registered" in capsys.readouterr().err


def test_rebuild_from_a_global_position_builds_only_the_events_above_it(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = append_ticks(url, streams=4, per_stream=5, prefix="old")
    append_ticks(url, streams=2, per_stream=5, prefix="new")
    asyncio.run(_serve_version_1(url))
    monkeypatch.setenv("PROJECTION_VERSIONS", "1,2")
    position = str(first.positions[-1])
    code = main(
        ["projections", "rebuild", "tally", "--target", TARGET, "--url", url, "--from", position]
    )
    out, err = capsys.readouterr()
    assert code == EXIT_OK, err
    assert "switched: tally v2 is live" in out
    assert sorted(read_model(url)) == ["new-0", "new-1"]  # the view: version 2
    assert read_model(url) == {k: v for k, v in replay_of_log(url).items() if k.startswith("new")}
