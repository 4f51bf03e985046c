"""Tests of tools/async_to_sync.py on source strings and temporary trees: no database."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "async_to_sync", ROOT / "tools" / "async_to_sync.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


a2s = _load_tool()

# The repository's table, plus rows that only these tests need.
RENAMES: Mapping[str, str] = {
    **a2s.RENAMES,
    "anext": "next",
    "aclosing": "closing",
    "asleep": "sleep",
    "AEvent": "Event",
    "aspawn": "spawn",
    "agather": "gather",
    "atimeout": "timeout",
}
HEADER_END = "run `make generate`.\n"

Sync = Callable[..., str]


@pytest.fixture
def sync(tmp_path: Path) -> Sync:
    """Returns a function that generates the sync module for a source string."""

    def run(source: str, renames: Mapping[str, str] = RENAMES) -> str:
        text = textwrap.dedent(source)
        path = Path("eventstore", "mod_async.py")
        return str(a2s.to_sync(text, path, root=tmp_path, renames=renames).text)

    return run


def body(generated: str) -> str:
    """Returns a generated module without its header."""
    return generated.split(HEADER_END, 1)[1].lstrip("\n")


def expect(source: str) -> str:
    return textwrap.dedent(source).lstrip("\n")


def fails(sync: Sync, source: str, renames: Mapping[str, str] = RENAMES) -> str:
    with pytest.raises(a2s.GenerationError) as caught:
        sync(source, renames)
    return str(caught.value)


# --- Strings, docstrings and comments ------------------------------------------------------


def test_await_inside_a_docstring_is_left_alone(sync: Sync) -> None:
    out = sync('''
        """Module: await the store; async def f; AsyncFoo; asyncio.sleep; Awaitable[int]."""


        async def f() -> None:
            """Do not await this: it is an async def of AsyncFoo."""
        ''')
    assert (
        '"""Module: await the store; async def f; AsyncFoo; asyncio.sleep; Awaitable[int]."""'
        in out
    )
    assert '    """Do not await this: it is an async def of AsyncFoo."""' in out
    assert "\ndef f() -> None:" in out


def test_comments_and_error_messages_keep_their_async_words(sync: Sync) -> None:
    out = sync("""
        async def f() -> None:
            # await the AsyncFoo here, async def style, asyncio.sleep
            raise ValueError("await first: async def AsyncFoo")
        """)
    assert "# await the AsyncFoo here, async def style, asyncio.sleep" in out
    assert 'raise ValueError("await first: async def AsyncFoo")' in out


def test_header_comes_first_however_the_docstring_is_wrapped(sync: Sync) -> None:
    sources = [
        '"""One line."""\n',
        '"""\n    Opens on the second line.\n"""\n',
        "'''Single quotes,\n\nwrapped.'''\n",
        "r'''A raw docstring.'''\n",
        "import os\n\nprint(os)\n",
        "",
    ]
    for source in sources:
        out = sync(source)
        assert out.startswith(
            "# Generated from mod_async.py by tools/async_to_sync.py: do not edit.\n"
            "# Change the async source and run `make generate`.\n"
        ), out
        assert ast.get_docstring(ast.parse(out)) == ast.get_docstring(ast.parse(source))


# --- Keywords --------------------------------------------------------------------------------


def test_async_def_await_and_async_with_lose_their_keywords(sync: Sync) -> None:
    out = sync("""
        async def f(conn) -> int:
            async with conn.cursor() as cur, conn.transaction():
                return await cur.fetch(await conn.ready())
        """)
    assert body(out) == expect("""
        def f(conn) -> int:
            with conn.cursor() as cur, conn.transaction():
                return cur.fetch(conn.ready())
        """)


def test_async_for_and_async_comprehensions_become_sync_ones(sync: Sync) -> None:
    out = sync("""
        async def f(rows):
            async for row in rows:
                print(row)
            return [x async for x in rows], {x: 1 async for x in rows}
        """)
    assert body(out) == expect("""
        def f(rows):
            for row in rows:
                print(row)
            return [x for x in rows], {x: 1 for x in rows}
        """)


def test_an_async_generator_becomes_a_sync_generator_of_iterator(sync: Sync) -> None:
    out = sync("""
        from collections.abc import AsyncIterator


        async def f() -> AsyncIterator[int]:
            yield 1
        """)
    assert body(out) == expect("""
        from collections.abc import Iterator


        def f() -> Iterator[int]:
            yield 1
        """)


def test_async_generator_gets_none_as_its_return_type(sync: Sync) -> None:
    out = sync("""
        from collections.abc import AsyncGenerator


        async def f() -> AsyncGenerator[int, None]:
            yield 1
        """)
    assert "def f() -> Generator[int, None, None]:" in out


def test_yielding_from_an_async_for_gets_a_noqa_for_up028(sync: Sync) -> None:
    out = sync("""
        async def f(rows):
            async for row in rows:
                yield row
        """)
    assert "# ruff: noqa: UP028\n" in out


def test_nested_async_with_get_a_noqa_for_sim117_only(sync: Sync) -> None:
    out = sync("""
        async def f(a, b):
            async with a:
                async with b:
                    pass
        """)
    assert "# ruff: noqa: SIM117\n" in out
    assert "noqa" not in sync("async def f() -> None:\n    pass\n")


# --- Awaitable -------------------------------------------------------------------------------


def test_awaitable_of_a_nested_generic_becomes_the_generic_and_its_import_goes(
    sync: Sync,
) -> None:
    out = sync("""
        from collections.abc import Awaitable, Callable


        def f(g: Callable[[], Awaitable[list[int]]]) -> Awaitable[dict[str, tuple[int, ...]]]:
            return g()
        """)
    assert body(out) == expect("""
        from collections.abc import Callable


        def f(g: Callable[[], list[int]]) -> dict[str, tuple[int, ...]]:
            return g()
        """)


def test_qualified_and_multiline_awaitable_are_unwrapped(sync: Sync) -> None:
    out = sync("""
        import typing


        def f() -> typing.Awaitable[
            int,  # why
        ]:
            return 1


        x: dict[str, typing.Awaitable[
            int
        ]]
        """)
    assert body(out) == expect("""
        def f() -> (
            int  # why
        ):
            return 1


        x: dict[str, int]
        """)


def test_a_bare_awaitable_fails(sync: Sync) -> None:
    message = fails(
        sync,
        """
        from collections.abc import Awaitable


        def f(x: object) -> bool:
            return isinstance(x, Awaitable)
        """,
    )
    assert "eventstore/mod_async.py:6: a bare `Awaitable` has no sync twin" in message


# --- Names -----------------------------------------------------------------------------------


def test_a_new_async_class_loses_its_prefix_without_a_table_row(sync: Sync) -> None:
    out = sync("""
        class AsyncWidget:
            async def __aenter__(self) -> AsyncWidget:
                return self

            async def __aexit__(self, *exc: object) -> None:
                pass
        """)
    assert body(out) == expect("""
        class Widget:
            def __enter__(self) -> Widget:
                return self

            def __exit__(self, *exc: object) -> None:
                pass
        """)


def test_attributes_with_the_async_prefix_are_renamed_too(sync: Sync) -> None:
    out = sync("""
        import psycopg_pool
        import sqlalchemy.ext.asyncio
        import tenacity

        pool: psycopg_pool.AsyncConnectionPool
        session: sqlalchemy.ext.asyncio.AsyncSession
        retrying = tenacity.AsyncRetrying()
        """)
    assert "pool: psycopg_pool.ConnectionPool" in out
    assert "session: sqlalchemy.ext.asyncio.Session" in out
    assert "retrying = tenacity.Retrying()" in out


def test_table_rows_win_over_the_generic_rule(sync: Sync) -> None:
    out = sync("""
        from contextlib import asynccontextmanager

        from eventstore.connections import AsyncConnectionLike, unwrap_async_connection


        @asynccontextmanager
        async def f(conn: AsyncConnectionLike):
            yield await unwrap_async_connection(conn)
        """)
    assert "from contextlib import contextmanager" in out
    assert "import ConnectionLike, unwrap_connection" in out
    assert "yield unwrap_connection(conn)" in out


def test_async_underscore_names_stay_without_a_table_row(sync: Sync) -> None:
    out = sync("async_in_memory_event_store = 1\n")
    assert "async_in_memory_event_store = 1" in out


def test_anext_and_aclosing_follow_the_rows_of_the_table(sync: Sync) -> None:
    out = sync("""
        from contextlib import aclosing


        async def first(rows):
            async with aclosing(rows) as it:
                return await anext(it)
        """)
    assert "from contextlib import closing" in out
    assert "with closing(rows) as it:" in out
    assert "return next(it)" in out


def test_entries_of_all_are_renamed_like_the_names_they_export(sync: Sync) -> None:
    out = sync("""
        __all__ = ["AsyncWidget", "helper"]


        class AsyncWidget:
            pass


        def helper() -> str:
            return "AsyncWidget"
        """)
    assert '__all__ = ["Widget", "helper"]' in out
    assert 'return "AsyncWidget"' in out


# --- asyncio and eventstore._acompat ---------------------------------------------------------


def test_asyncio_sleep_left_in_a_source_fails_with_a_clear_error(sync: Sync) -> None:
    message = fails(
        sync,
        """
        import asyncio


        async def f() -> None:
            await asyncio.sleep(1)
        """,
    )
    assert message == (
        "eventstore/mod_async.py:6: asyncio.sleep has no sync twin: use eventstore._acompat.asleep"
    )


def test_from_asyncio_import_fails(sync: Sync) -> None:
    message = fails(sync, "from asyncio import Queue\n\nq: Queue[int]\n")
    assert "eventstore/mod_async.py:1: `from asyncio import ...` has no sync twin" in message


def test_asyncio_without_a_twin_points_to_the_escape_block(sync: Sync) -> None:
    message = fails(sync, "import asyncio\n\nq = asyncio.Queue()\n")
    assert "asyncio.Queue has no sync twin: move it into an `if True:  # ASYNC` block" in message


def test_an_unused_import_asyncio_is_removed(sync: Sync) -> None:
    assert "asyncio" not in sync("import asyncio\nimport os\n\nprint(os)\n")


def test_asleep_from_acompat_becomes_sleep(sync: Sync) -> None:
    out = sync("""
        from eventstore._acompat import ALock, asleep


        async def f(lock: ALock) -> None:
            async with lock:
                await asleep(0.1)
        """)
    assert body(out) == expect("""
        from eventstore._acompat import Lock, sleep


        def f(lock: Lock) -> None:
            with lock:
                sleep(0.1)
        """)


# --- Escape blocks ---------------------------------------------------------------------------


def test_the_escape_block_keeps_its_else_body_at_module_level(sync: Sync) -> None:
    out = sync('''
        if True:  # ASYNC
            import asyncio

            lock = asyncio.Lock()
        else:
            import threading

            lock = threading.Lock()
            text = """first
        second"""
        ''')
    assert body(out) == expect('''
        import threading

        lock = threading.Lock()
        text = """first
        second"""
        ''')


def test_the_escape_block_keeps_its_else_body_in_a_function(sync: Sync) -> None:
    out = sync("""
        async def f() -> int:
            x = 1
            if True:  # ASYNC
                await asyncio.sleep(0)
            else:
                # Threads need no yield point.
                x += 1
            return x
        """)
    assert body(out) == expect("""
        def f() -> int:
            x = 1
            # Threads need no yield point.
            x += 1
            return x
        """)


def test_the_escape_block_keeps_its_else_body_in_a_class(sync: Sync) -> None:
    out = sync("""
        class C:
            if True:  # ASYNC
                mode = "asyncio"
            else:
                mode = "threads"
        """)
    assert body(out) == expect("""
        class C:
            mode = "threads"
        """)


def test_an_escape_block_without_else_disappears(sync: Sync) -> None:
    out = sync("""
        async def f() -> None:
            if True:  # ASYNC
                await asyncio.sleep(0)


        class C:
            if True:  # ASYNC
                loop = asyncio.get_running_loop()
        """)
    assert body(out) == expect("""
        def f() -> None:
            pass


        class C:
            pass
        """)


def test_a_stray_async_mark_fails(sync: Sync) -> None:
    assert "`# ASYNC` marks only an `if True:` statement" in fails(
        sync, "if False:  # ASYNC\n    x = 1\n"
    )
    assert "`# ASYNC` belongs on an `if True:` line" in fails(sync, "x = 1  # ASYNC\n")
    assert "takes `else:`, not `elif`" in fails(
        sync, "if True:  # ASYNC\n    x = 1\nelif y:\n    x = 2\n"
    )


# --- Runs over a tree ------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_check_reports_missing_stale_and_orphan_targets(tmp_path: Path) -> None:
    write(tmp_path / "outbox" / "relay_async.py", "async def relay() -> None:\n    pass\n")
    write(tmp_path / "tests" / "unit" / "t_async.py", "async def t() -> None:\n    pass\n")
    write(tmp_path / "tests" / "unit" / "t.py", "def t() -> None:\n    pass\n")
    orphan = a2s.header("gone_async.py") + "x = 1\n"
    write(tmp_path / "projections" / "gone.py", orphan)
    write(tmp_path / "projections" / "handwritten.py", "x = 1\n")
    assert a2s.check(tmp_path, renames={"aclose": "close"}) == [
        "projections/gone.py is generated, but its source is gone: delete it",
        "RENAMES['aclose'] (-> 'close') is used by no source: delete the row",
        "outbox/relay.py is missing: run `make generate`",
        "tests/unit/t.py is stale: run `make generate`",
    ]


def test_check_passes_once_the_targets_are_written(tmp_path: Path) -> None:
    write(tmp_path / "eventstore" / "store_async.py", "async def f() -> None:\n    pass\n")
    a2s.write(a2s.build(tmp_path, renames={}).generated)
    assert (
        (tmp_path / "eventstore" / "store.py").read_text().endswith("def f() -> None:\n    pass\n")
    )
    assert a2s.check(tmp_path, renames={}) == []


def test_hidden_and_virtualenv_directories_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "tests" / ".venv" / "x_async.py", "async def f(): pass\n")
    write(tmp_path / "tests" / "__pycache__" / "y_async.py", "async def f(): pass\n")
    write(tmp_path / "tests" / "z_async.py", "async def f(): pass\n")
    assert a2s.find_sources(tmp_path) == [tmp_path / "tests" / "z_async.py"]


def test_a_table_row_that_no_source_uses_fails_the_check(tmp_path: Path) -> None:
    write(tmp_path / "eventstore" / "a_async.py", "async def f(it):\n    return await anext(it)\n")
    write(tmp_path / "eventstore" / "b_async.py", "x = 1\n")
    problems = a2s.check(tmp_path, renames={"anext": "next", "aclosing": "closing"})
    assert problems == [
        "RENAMES['aclosing'] (-> 'closing') is used by no source: delete the row",
        "eventstore/a.py is missing: run `make generate`",
        "eventstore/b.py is missing: run `make generate`",
    ]


def test_a_run_restricted_to_some_sources_skips_the_unused_row_check(tmp_path: Path) -> None:
    source = write(tmp_path / "eventstore" / "a_async.py", "x = 1\n")
    problems = a2s.check(tmp_path, [source], renames={"aclosing": "closing"})
    assert problems == ["eventstore/a.py is missing: run `make generate`"]


def test_a_source_error_is_reported_by_the_check(tmp_path: Path) -> None:
    write(tmp_path / "eventstore" / "a_async.py", "import asyncio\n\nasyncio.run(f())\n")
    assert a2s.check(tmp_path, renames={}) == [
        "eventstore/a_async.py:3: asyncio.run has no sync twin: "
        "move it into an `if True:  # ASYNC` block with an `else:`",
    ]


def test_another_ruff_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(a2s, "ruff_version", lambda: "0.0.1")
    expected = f"needs ruff {a2s.RUFF_VERSION} (found: 0.0.1)"
    with pytest.raises(a2s.GenerationError, match=re.escape(expected)):
        a2s.require_ruff()


def test_the_command_line_refuses_a_path_that_is_not_an_async_source(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        a2s.main(["--check", str(write(tmp_path / "x.py", "x = 1\n"))])
    assert caught.value.code == 2
