"""Crashes under load: Postgres killed and restarted, writer processes SIGKILLed mid-batch.

Nothing acknowledged may be lost, nothing may be stored twice, no batch may be half-written.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from eventstore import (
    DatabaseUnavailableError,
    EventRegistry,
    PostgresEventStore,
    migrate,
)
from tests.support import Deposited, wait_until

pytestmark = pytest.mark.slow


def stored(url: str) -> list[tuple[str, int, uuid.UUID]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT stream_id, version, event_id FROM eventstore.events ORDER BY global_position"
        ).fetchall()


def assert_log_is_whole(rows: list[tuple[str, int, uuid.UUID]]) -> None:
    by_stream: dict[str, list[int]] = {}
    for stream_id, version, _ in rows:
        by_stream.setdefault(stream_id, []).append(version)
    for stream_id, versions in by_stream.items():
        assert sorted(versions) == list(range(1, len(versions) + 1)), stream_id
    assert len({r[2] for r in rows}) == len(rows), "an event id is stored twice"


class Writers:
    """Threads appending with exact versions; each retries an unanswered append as is."""

    def __init__(self, store: PostgresEventStore, count: int) -> None:
        self.store = store
        self.acked: dict[uuid.UUID, tuple[str, int]] = {}
        self.outages = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(n,)) for n in range(count)]

    def run(self, n: int) -> None:
        stream, version = f"writer-{n}", 0
        event_id = uuid.uuid4()
        while not self.stop.is_set():
            try:
                result = self.store.append(
                    stream,
                    Deposited(amount=1, currency="EUR"),
                    expected_version=version,
                    event_ids=[event_id],
                )
            except DatabaseUnavailableError:
                with self.lock:
                    self.outages += 1
                continue  # same id, same version: the outcome may have been committed
            with self.lock:
                self.acked[event_id] = (stream, result.last_version)
            version, event_id = result.last_version, uuid.uuid4()

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def test_no_acknowledged_append_is_lost_when_postgres_crashes_under_load(
    tmp_path: Path, eventstore_registry: EventRegistry
) -> None:
    from eventstore.postgres.embedded import start_embedded_postgres, stop_embedded_postgres

    pgdata = tmp_path / "pgdata"
    url = start_embedded_postgres(pgdata)
    port = urlsplit(url).port
    try:
        migrate.upgrade(url)
        store = PostgresEventStore(
            url,
            registry=eventstore_registry,
            max_size=4,
            connect_timeout=2,
            reconnect_attempts=3,
        )
        with store, Writers(store, 4) as writers:
            wait_until(lambda: len(writers.acked) >= 300, timeout=60)
            # Immediate shutdown is a crash: no checkpoint, WAL recovery on the next start.
            crashed = postmaster_pid(pgdata)
            os.kill(crashed, signal.SIGQUIT)
            wait_until(lambda: not (pgdata / "postmaster.pid").exists(), timeout=60)
            at_crash = len(writers.acked)
            start_embedded_postgres(pgdata, port=port)
            assert postmaster_pid(pgdata) != crashed
            wait_until(lambda: len(writers.acked) >= at_crash + 300, timeout=60)
            stats = store._pool.get_stats() if store._pool else {}
        # Connections died in the crash (returned broken), and the store retried past them.
        assert stats.get("returns_bad", 0) + stats.get("connections_lost", 0) > 0, stats
        rows = stored(url)
        assert_log_is_whole(rows)
        where = {r[2]: (r[0], r[1]) for r in rows}
        for event_id, place in writers.acked.items():
            assert where.get(event_id) == place, "an acknowledged append is missing"
        # Writers advance only on acknowledgement, so every stored event was acknowledged.
        assert len(rows) == len(writers.acked)
        # The store retried through the outage itself (writers.outages counts what leaked
        # through to the caller: only when all reconnect attempts fell inside the outage).
    finally:
        stop_embedded_postgres(pgdata)


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys, uuid
    from tests.support import Deposited, make_registry
    from eventstore import PostgresEventStore
    store = PostgresEventStore(sys.argv[1], registry=make_registry())
    batch = 0
    while True:
        events = [Deposited(amount=n, currency="EUR") for n in range(100)]
        store.append(f"batch-{batch}", events, expected_version=0)
        print(batch, flush=True)
        batch += 1
    """
)


def test_a_writer_killed_mid_batch_leaves_only_whole_batches(eventstore_database_url: str) -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, eventstore_database_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
    )
    assert process.stdout is not None
    acked = []
    try:
        for line in process.stdout:
            acked.append(int(line))
            if len(acked) >= 30:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
    rows = stored(eventstore_database_url)
    assert_log_is_whole(rows)
    per_stream = Counter(r[0] for r in rows)
    assert set(per_stream.values()) == {100}, "a batch was half-written"
    for batch in acked:
        assert per_stream[f"batch-{batch}"] == 100
