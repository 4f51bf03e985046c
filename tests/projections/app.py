"""The projections the tests run, in-process and as `eventstore projections run` processes.

``eventstore projections run tests.projections.app:group`` imports `group`, configured from
the environment (so one module serves every test):

- ``PROJECTION_VERSIONS`` (default ``1``): which versions of `Tally` run, e.g. ``1,2``;
- ``PROJECTION_SHARDS`` (default 2), ``PROJECTION_BATCH_SIZE`` (default 50);
- ``PROJECTION_HANDLER_DELAY`` (default 0): seconds each batch spends in the database after
  its writes (``pg_sleep``, inside the batch transaction), so that a kill lands in a batch
  that has written and not committed; ``a-b`` draws a delay from that range per batch.

`Tally` keeps one row per stream: how many events, the last version and an order-sensitive
checksum. Its handler refuses an event that is not the stream's next version, so an event
applied twice, skipped or out of order shows in the read model (or as a dead letter), and
`replay` computes what the table must hold from the log alone.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import Any, ClassVar, Final

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from eventstore import Event, EventRegistry, RecordedEvent
from projections import Projection, ProjectionGroup, handles
from tests.reliability.subscriber_app import Ticked

MODULUS: Final = 2_147_483_647
_FOLDED: Final = frozenset({"stream_id", "events", "checksum"})
READ_MODELS: Final = "read_models"

metadata = sa.MetaData(schema=READ_MODELS)
tally = sa.Table(
    "tally",
    metadata,
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("last_version", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.BigInteger, nullable=False),
    sa.Index("tally_events_idx", "events"),
)

# Where `Tally` records its side effect (a stand-in for an e-mail), when not replaying.
SIDE_EFFECTS: Final = """
CREATE TABLE IF NOT EXISTS public.side_effects (
    seq bigserial PRIMARY KEY,
    version int NOT NULL,
    global_position bigint NOT NULL
)
"""


class Noted(Event):
    """An event no projection here handles: skipped in SQL, and the checkpoint moves on."""

    event_type: ClassVar[str] = "projections.Noted"
    text: str


def make_registry() -> EventRegistry:
    return EventRegistry([Ticked, Noted])


def _delay() -> tuple[float, float]:
    raw = os.environ.get("PROJECTION_HANDLER_DELAY", "0")
    low, _, high = raw.partition("-")
    return float(low), float(high or low)


class UnexpectedVersionError(Exception):
    """An event is not the next version of its stream in the read model."""


class Tally(Projection):
    """Counts each stream's events, in order, with an order-sensitive checksum."""

    name = "tally"
    version = 1
    tables = (tally,)
    shards = int(os.environ.get("PROJECTION_SHARDS", "2"))
    batch_size = int(os.environ.get("PROJECTION_BATCH_SIZE", "50"))
    side_effects: ClassVar[bool] = False

    @handles
    def ticked(self, event: RecordedEvent[Ticked], conn: sa.Connection, replay: bool) -> None:
        table = self.table("tally")
        values = self.row(event)
        statement = insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.stream_id],
            set_={
                # last_version (and v2's writer) are replaced; the counts are folded in.
                **{c: statement.excluded[c] for c in values if c not in _FOLDED},
                "events": table.c.events + 1,
                "checksum": (table.c.checksum * 31 + statement.excluded.checksum) % MODULUS,
            },
            where=table.c.last_version == statement.excluded.last_version - 1,
        )
        if conn.execute(statement.returning(table.c.stream_id)).first() is None:
            raise UnexpectedVersionError(f"{event.stream_id}@{event.version} is not the next")
        if self.side_effects and not replay:
            conn.execute(
                sa.text(
                    "INSERT INTO public.side_effects (version, global_position) VALUES (:v, :p)"
                ),
                {"v": self.version, "p": event.global_position},
            )

    def row(self, event: RecordedEvent[Ticked]) -> dict[str, Any]:
        return {
            "stream_id": event.stream_id,
            "events": 1,
            "last_version": event.version,
            "checksum": (event.data.n + event.version) % MODULUS,
        }

    def handle_batch(self, events: Any, conn: Any, *, replay: bool) -> None:
        super().handle_batch(events, conn, replay=replay)
        low, high = _delay()
        if high > 0:  # after the writes: the batch has written and not committed
            conn.execute(sa.text("SELECT pg_sleep(:s)"), {"s": random.uniform(low, high)})


tally_v2 = sa.Table(
    "tally",
    sa.MetaData(schema=READ_MODELS),
    sa.Column("stream_id", sa.Text, primary_key=True),
    sa.Column("writer", sa.Text, nullable=False),  # a new column: the view is recreated
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.Column("last_version", sa.BigInteger, nullable=False),
    sa.Column("checksum", sa.BigInteger, nullable=False),
)


class TallyV2(Tally):
    """Version 2: the same counts, plus the writer of each stream's latest event."""

    version = 2
    tables = (tally_v2,)

    def row(self, event: RecordedEvent[Ticked]) -> dict[str, Any]:
        return {**super().row(event), "writer": event.data.writer}


def replay(events: Iterable[tuple[str, int, dict[str, Any]]]) -> dict[str, tuple[int, int, int]]:
    """Returns ``{stream: (events, last_version, checksum)}`` from ``(stream, version, data)``
    in version order per stream: what `Tally` must hold."""
    rows: dict[str, tuple[int, int, int]] = {}
    for stream, version, data in events:
        count, _, checksum = rows.get(stream, (0, 0, 0))
        rows[stream] = (count + 1, version, (checksum * 31 + data["n"] + version) % MODULUS)
    return rows


def replay_of_log(url: str, schema: str = "eventstore") -> dict[str, tuple[int, int, int]]:
    """Replays the stored `Ticked` events into what `Tally` must hold."""
    with psycopg.connect(url) as conn:
        events = conn.execute(
            f"SELECT stream_id, version, data FROM {schema}.events "
            "WHERE event_type = %s ORDER BY stream_id, version",
            (Ticked.event_type,),
        ).fetchall()
    return replay(events)


def read_model(url: str, relation: str = "read_models.tally") -> dict[str, tuple[int, int, int]]:
    """Returns the rows of `Tally` through its view (or a version's table)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT stream_id, events, last_version, checksum FROM {relation}"
        ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def group() -> ProjectionGroup:
    """Returns the group, configured from the environment (see the module docstring)."""
    wanted = {int(v) for v in os.environ.get("PROJECTION_VERSIONS", "1").split(",")}
    projections = [p for p in (Tally(), TallyV2()) if p.version in wanted]
    return ProjectionGroup(make_registry(), tuple(projections))
