"""Generates eventstore/store.py from eventstore/async_store.py.

The async module is the source of truth; this script rewrites it token by token into the
sync one. `python tools/async_to_sync.py --check` exits 1 when the checked-in sync module
is stale (the test suite runs that check).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "eventstore" / "async_store.py"
TARGET = ROOT / "eventstore" / "store.py"

# Ordered: longer names first so that prefixes do not shadow them.
REPLACEMENTS = [
    (
        r'"""The Postgres event store for asyncio code\.',
        '"""The Postgres event store for threaded and plain synchronous code.',
    ),
    (
        r"This module is the single source of truth for the Postgres I/O shell: `eventstore/store.py`\n"
        r"is generated from it by `tools/async_to_sync.py`, and the test suite fails when the two\n"
        r"drift\.",
        "GENERATED from `eventstore/async_store.py` by `tools/async_to_sync.py`: do not edit;\n"
        "change the async module and regenerate.",
    ),
    (r"\bAsyncPostgresEventStore\b", "PostgresEventStore"),
    (r"\bAsyncRetrying\b", "Retrying"),
    (r"\bAwaitable\[(\w+)\]", r"\1"),
    (r"\bAwaitable, ", ""),
    (r"\bAsyncConnectionPool\b", "ConnectionPool"),
    (r"\bAsyncConnectionLike\b", "SyncConnectionLike"),
    (r"\bAsyncConnection\b", "Connection"),
    (r"\bunwrap_async_connection\b", "unwrap_connection"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\basyncio\.Lock\b", "threading.Lock"),
    (r"^import asyncio$", "import threading"),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
]


def generate() -> str:
    """Returns the sync module's text, formatted by ruff."""
    text = SOURCE.read_text()
    for pattern, replacement in REPLACEMENTS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    fmt = [sys.executable, "-m", "ruff"]
    text = subprocess.run(
        [
            *fmt,
            "check",
            "--fix-only",
            "--select",
            "I,F401",
            "--quiet",
            "--stdin-filename",
            str(TARGET),
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return subprocess.run(
        [*fmt, "format", "--stdin-filename", str(TARGET), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET} is stale: run python tools/async_to_sync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
