"""A blue/green rebuild while writers append and readers read through the view."""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any, ClassVar

import psycopg

from eventstore import PostgresEventStore
from tests.projections.app import Tally, TallyV2, read_model, replay_of_log
from tests.projections.support import REGISTRY, append_ticks, eventually, query, running
from tests.reliability.subscriber_app import Ticked


class NotifyingTally(Tally):
    side_effects: ClassVar[bool] = True


class NotifyingTallyV2(TallyV2):
    side_effects: ClassVar[bool] = True


class Writer(threading.Thread):
    """Appends small transactions to random streams until stopped."""

    def __init__(self, url: str, name: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.url, self.stop, self.errors = url, stop, list[BaseException]()
        self.rng = random.Random(name)

    def run(self) -> None:
        try:
            with PostgresEventStore(self.url, registry=REGISTRY, max_size=1) as store:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    events = [Ticked(writer=self.name, txn=n, n=k) for k in range(3)]
                    store.append(f"s-{self.rng.randrange(40)}", events[: self.rng.randint(1, 3)])
                    self.stop.wait(0.05)  # pacing the writers: the rebuild must outrun them
        except BaseException as exc:
            self.errors.append(exc)


class Reader(threading.Thread):
    """Reads the view over and over: what it shows must never go back (never half-built)."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(name="reader", daemon=True)
        self.url, self.stop = url, stop
        self.reads: list[tuple[bool, int, int | None]] = []  # (v2 serves, total, v2 total)
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self.stop.is_set():
                    self.reads.append(self.read(conn))
        except BaseException as exc:
            self.errors.append(exc)

    def read(self, conn: psycopg.Connection[Any]) -> tuple[bool, int, int | None]:
        row = conn.execute(
            "SELECT to_jsonb(t) ? 'writer', "
            "(SELECT coalesce(sum(events), 0) FROM read_models.tally) "
            "FROM (SELECT * FROM read_models.tally LIMIT 1) t"
        ).fetchone()
        serves_v2, total = (False, 0) if row is None else (bool(row[0]), int(row[1]))
        # Beside it, how far the version being built is (never dropped while reading).
        exists = conn.execute("SELECT to_regclass('read_models.tally_v2') IS NOT NULL")
        if exists.fetchone() != (True,):
            return serves_v2, total, None
        v2 = conn.execute("SELECT coalesce(sum(events), 0) FROM read_models.tally_v2").fetchone()
        return serves_v2, total, None if v2 is None else int(v2[0])


async def test_a_rebuild_builds_beside_the_live_version_and_readers_never_see_it_half_built(
    url: str,
) -> None:
    append_ticks(url, streams=40, per_stream=50)  # 2,000 events before the rebuild
    stop_writers, stop_reader = threading.Event(), threading.Event()
    writers = [Writer(url, f"w{n}", stop_writers) for n in range(2)]
    reader = Reader(url, stop_reader)
    try:
        async with running(url, NotifyingTally()) as blue:
            await blue.wait_until_caught_up("tally", timeout=30)
            for thread in (*writers, reader):
                thread.start()
            # The new deployment: version 2 only, switched live by its daemon when caught up.
            async with running(url, NotifyingTallyV2()) as green:

                async def switched() -> bool:
                    return await green.live_version("tally") == 2

                await eventually(switched, 60, "version 2 is switched live")
                # Writers go on: version 2 now handles new events live, with side effects.
                await eventually(_side_effects(url, 2), 30, "v2 side effects")
                stop_writers.set()
                for writer in writers:
                    writer.join(10)
                await green.wait_until_caught_up("tally", timeout=30)
                stop_reader.set()
                reader.join(10)
                assert read_model(url) == replay_of_log(url)
                assert "read_models.tally_v1" in (await green.status("tally"))[0].tables
                dropped = await green.drop("tally", 1)
    finally:
        stop_writers.set()
        stop_reader.set()
    assert dropped == ["read_models.tally_v1"]
    assert not [e for t in (*writers, reader) for e in t.errors]
    _assert_never_half_built(reader.reads)
    # No side effect ran twice: version 2 ran none while it replayed the log.
    assert (
        query(url, "SELECT global_position FROM side_effects GROUP BY 1 HAVING count(*) > 1") == []
    )
    v1_effects, v2_effects = (_side_effects_of(url, v) for v in (1, 2))
    assert v1_effects >= 2000 and v2_effects > 0


def _side_effects(url: str, version: int) -> Any:
    async def count() -> int:
        return _side_effects_of(url, version)

    return count


def _side_effects_of(url: str, version: int) -> int:
    return int(query(url, "SELECT count(*) FROM side_effects WHERE version = %s", (version,))[0][0])


def _assert_never_half_built(reads: list[tuple[bool, int, int | None]]) -> None:
    totals = [total for _, total, _ in reads]
    went_back = [(a, b) for a, b in itertools.pairwise(totals) if b < a]
    assert not went_back, f"a read saw less than the read before it: {went_back[:5]}"
    serving = [v2 for v2, _, _ in reads]
    assert serving[0] is False and serving[-1] is True
    assert serving == sorted(serving), "the view went back to version 1"
    # Reads happened while version 2 was half built beside it, and did not see it.
    half_built = [(t, b) for v2, t, b in reads if not v2 and b is not None and 0 < b < t]
    assert half_built, f"no read during the rebuild ({len(reads)} reads)"
