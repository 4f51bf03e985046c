"""SQL statements of the subscription engine, one constant per operation.

See `eventstore.subscriptions.window` for the window technique. Every checkpoint write is
conditional on the writer's ``epoch`` (the fencing token bumped on every takeover), and
lease expiry is judged by the database clock (``now()``), never a process's clock.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from psycopg import sql

_EVENT_COLUMNS: Final = (
    "SELECT global_position, stream_id, version, event_id, event_type, schema_version, "
    "data::text, metadata::text, recorded_at, transaction_id::text::bigint FROM {events} "
)

# The window's rows: transaction ids from low's xmax up to high's xmax, plus low's
# in-progress ids that high sees as finished, each visible in high; then by position. The
# ranges go through events_transaction_id_idx, so the cost follows the window, not the table.
WINDOW_PAGE: Final = (
    _EVENT_COLUMNS + "WHERE ((transaction_id >= %(from_xid)s::text::xid8 "
    "AND transaction_id < %(to_xid)s::text::xid8) "
    "OR transaction_id = ANY(%(extra_xids)s::text[]::xid8[])) "
    "AND pg_visible_in_snapshot(transaction_id, %(high)s::pg_snapshot) "
    "AND global_position > %(after)s "
    "AND (%(shards)s = 1 OR shard_key %% %(shards)s = %(shard)s) "
    "AND (%(types)s::text[] IS NULL OR event_type = ANY(%(types)s::text[])) "
    "AND (%(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)) "
    "ORDER BY global_position LIMIT %(limit)s"
)

CURRENT_SNAPSHOT: Final = "SELECT pg_current_snapshot()::text"

# A live worker's next page, read in the same round trip as its checkpoint (see
# `AsyncSubscriptionStore.batch_cycle`): the first page of the window a drained checkpoint
# at ``low`` opens up to this statement's own snapshot, which comes first in every row
# (once, with NULLs, when the window is empty). ``to_xid`` is low's xmax plus the widest
# window read without asking where its rows start, so the planner sees a narrow range of
# the transaction id index; a wider window is read again by the usual two steps.
LIVE_PAGE: Final = (
    "WITH h AS MATERIALIZED (SELECT pg_current_snapshot() AS high) "
    "SELECT h.high::text, e.* FROM h LEFT JOIN LATERAL (" + _EVENT_COLUMNS + "WHERE "
    "((transaction_id >= %(from_xid)s::text::xid8 AND transaction_id < %(to_xid)s::text::xid8 "
    "AND transaction_id < pg_snapshot_xmax(h.high)) "
    "OR transaction_id = ANY(%(extra_xids)s::text[]::xid8[])) "
    "AND pg_visible_in_snapshot(transaction_id, h.high) "
    "AND global_position > 0 "
    "AND (%(shards)s = 1 OR shard_key %% %(shards)s = %(shard)s) "
    "AND (%(types)s::text[] IS NULL OR event_type = ANY(%(types)s::text[])) "
    "AND (%(prefix)s::text IS NULL OR starts_with(stream_id, %(prefix)s::text)) "
    "ORDER BY global_position LIMIT %(limit)s) AS e ON true"
)


# Where a new window's rows start: a lower bound of their positions, from the same
# transaction id ranges through the index (index entries only). A window read from its
# start position by position never walks the rows before it, however large the table.
WINDOW_START: Final = (
    "SELECT min(global_position) FROM {events} "
    "WHERE (transaction_id >= %(from_xid)s::text::xid8 "
    "AND transaction_id < %(to_xid)s::text::xid8) "
    "OR transaction_id = ANY(%(extra_xids)s::text[]::xid8[])"
)

CREATE_CHECKPOINTS: Final = (
    "INSERT INTO {checkpoints} (name, shard, shard_count, low) "
    "SELECT %(name)s, s, %(shards)s, %(low)s FROM generate_series(0, %(shards)s - 1) AS s "
    "ON CONFLICT (name, shard) DO NOTHING"
)

SHARD_COUNTS: Final = "SELECT DISTINCT shard_count FROM {checkpoints} WHERE name = %(name)s"

HEARTBEAT: Final = (
    "WITH beat AS (INSERT INTO {runners} (name, runner, lease_until) "
    "VALUES (%(name)s, %(runner)s, now() + %(ttl)s * interval '1 second') "
    "ON CONFLICT (name, runner) DO UPDATE SET lease_until = EXCLUDED.lease_until), "
    "gone AS (DELETE FROM {runners} WHERE name = %(name)s AND lease_until < now() - "
    "%(ttl)s * interval '1 second') "
    "SELECT count(*) + 1 FROM {runners} "
    "WHERE name = %(name)s AND runner <> %(runner)s AND lease_until >= now()"
)

LEAVE: Final = "DELETE FROM {runners} WHERE name = %(name)s AND runner = %(runner)s"

# Renews the leases of the shards this runner works on; what it no longer holds is not
# returned. Only those shards: a runner restarted under the same id must not keep its dead
# predecessor's leases alive without working on them.
RENEW_LEASES: Final = (
    "UPDATE {checkpoints} SET lease_until = now() + %(ttl)s * interval '1 second' "
    "WHERE name = %(name)s AND owner = %(runner)s AND shard = ANY(%(shards)s::int[]) "
    "RETURNING shard, epoch"
)

# Takes shards nobody holds (or whose lease ran out), bumping the fencing epoch; also those
# recorded under this runner's own id that it does not work on (a predecessor that died
# under the same id): the bumped epoch fences it out should it still be alive.
CLAIM_SHARDS: Final = (
    "UPDATE {checkpoints} AS c SET owner = %(runner)s, epoch = c.epoch + 1, "
    "lease_until = now() + %(ttl)s * interval '1 second', updated_at = now() "
    "FROM (SELECT name, shard FROM {checkpoints} WHERE name = %(name)s "
    "AND (owner IS NULL OR lease_until < now() "
    "OR (owner = %(runner)s AND NOT shard = ANY(%(mine)s::int[]))) "
    "ORDER BY shard LIMIT %(count)s FOR UPDATE SKIP LOCKED) AS free "
    "WHERE c.name = free.name AND c.shard = free.shard RETURNING c.shard, c.epoch"
)

RELEASE_SHARD: Final = (
    "UPDATE {checkpoints} SET owner = NULL, lease_until = NULL, updated_at = now() "
    "WHERE name = %(name)s AND shard = %(shard)s AND epoch = %(epoch)s"
)

# With whether the subscription holds any stream at all (a probe of the partial index of
# parked dead letters): most batches then skip asking which of their streams are held.
# And the current snapshot, in case the cycle opens a new window: one round trip for all.
LOAD_CHECKPOINT: Final = (
    "SELECT low, high, position, status, epoch, EXISTS (SELECT 1 FROM {dead_letters} d "
    "WHERE d.name = %(name)s AND d.status = 'parked'), pg_current_snapshot()::text "
    "FROM {checkpoints} WHERE name = %(name)s AND shard = %(shard)s"
)

# The fence: only the holder of the current epoch moves the checkpoint. (A batch in flight
# when the shard is paused still commits; the pause takes effect at the next one.)
SAVE_CHECKPOINT: Final = (
    "UPDATE {checkpoints} SET low = %(low)s, high = %(high)s, position = %(position)s, "
    "handled = handled + %(handled)s, last_error = NULL, updated_at = now(), "
    "lease_until = now() + %(ttl)s * interval '1 second' "
    "WHERE name = %(name)s AND shard = %(shard)s AND epoch = %(epoch)s RETURNING 1"
)

# The same move sent with the batch's COMMIT in one round trip (`finish_cycle`): the fence
# must then stop the COMMIT, so a checkpoint that did not move raises division_by_zero (no
# row: 1 / 0), which aborts the pipeline before its COMMIT runs; the caller rolls back.
FINISH_CYCLE: Final = "WITH moved AS (" + SAVE_CHECKPOINT + ") SELECT 1 / count(*) FROM moved"

HALT_SHARD: Final = (
    "UPDATE {checkpoints} SET status = 'halted', last_error = %(error)s, updated_at = now() "
    "WHERE name = %(name)s AND shard = %(shard)s AND epoch = %(epoch)s"
)

NOTE_ERROR: Final = (
    "UPDATE {checkpoints} SET last_error = %(error)s, updated_at = now() "
    "WHERE name = %(name)s AND shard = %(shard)s AND epoch = %(epoch)s"
)

SET_STATUS: Final = (
    "UPDATE {checkpoints} SET status = %(status)s, updated_at = now(), "
    "last_error = CASE WHEN %(status)s = 'running' THEN NULL ELSE last_error END "
    "WHERE name = %(name)s RETURNING shard"
)

# A reset bumps the epoch too, so a runner busy with a batch cannot write its old window back.
RESET: Final = (
    "UPDATE {checkpoints} SET low = %(low)s, high = NULL, position = 0, epoch = epoch + 1, "
    "owner = NULL, lease_until = NULL, handled = 0, last_error = NULL, updated_at = now() "
    "WHERE name = %(name)s RETURNING shard"
)

LOWS: Final = "SELECT shard, low FROM {checkpoints} WHERE name = %(name)s"

HELD_STREAMS: Final = (
    "SELECT DISTINCT stream_id FROM {dead_letters} WHERE name = %(name)s "
    "AND status = 'parked' AND stream_id = ANY(%(stream_ids)s::text[])"
)

PARK: Final = (
    "INSERT INTO {dead_letters} (name, shard, global_position, stream_id, version, event_id, "
    "event_type, reason, error, traceback) VALUES (%(name)s, %(shard)s, %(position)s, "
    "%(stream_id)s, %(version)s, %(event_id)s, %(event_type)s, %(reason)s, %(error)s, "
    "%(traceback)s) ON CONFLICT (name, global_position) DO NOTHING"
)

_DEAD_LETTER_COLUMNS: Final = (
    "SELECT id, name, shard, global_position, stream_id, version, event_id, event_type, "
    "reason, error, traceback, status, created_at FROM {dead_letters} "
)

LIST_DEAD_LETTERS: Final = (
    _DEAD_LETTER_COLUMNS + "WHERE name = %(name)s AND (%(status)s::text IS NULL OR "
    "status = %(status)s) ORDER BY global_position LIMIT %(limit)s"
)

# One held stream's dead letters, oldest first, locked so two retries never interleave.
PARKED_OF_STREAM: Final = (
    _DEAD_LETTER_COLUMNS + "WHERE name = %(name)s AND stream_id = %(stream_id)s "
    "AND status = 'parked' ORDER BY global_position FOR UPDATE"
)

PARKED_STREAMS: Final = (
    "SELECT stream_id FROM {dead_letters} WHERE name = %(name)s AND status = 'parked' "
    "AND (%(stream_id)s::text IS NULL OR stream_id = %(stream_id)s) "
    "GROUP BY stream_id ORDER BY min(global_position)"
)

READ_POSITIONS: Final = (
    _EVENT_COLUMNS + "WHERE global_position = ANY(%(positions)s::bigint[]) ORDER BY global_position"
)

SET_DEAD_LETTER_STATUS: Final = (
    "UPDATE {dead_letters} SET status = %(status)s, updated_at = now() "
    "WHERE id = ANY(%(ids)s::bigint[]) AND status = 'parked' RETURNING id"
)

LOCK_CHECKPOINT: Final = (
    "SELECT 1 FROM {checkpoints} WHERE name = %(name)s AND shard = %(shard)s FOR UPDATE"
)

STATUS: Final = (
    "SELECT c.name, c.shard, c.shard_count, c.status, c.owner, c.lease_until, "
    "c.lease_until >= now() AS lease_live, c.epoch, c.handled, c.low, c.high, c.position, "
    "c.last_error, c.updated_at, now() - c.updated_at AS window_age, "
    "(SELECT count(*) FROM {dead_letters} d WHERE d.name = c.name AND d.shard = c.shard "
    "AND d.status = 'parked') AS dead_letters "
    "FROM {checkpoints} c WHERE (%(name)s::text IS NULL OR c.name = %(name)s) "
    "ORDER BY c.name, c.shard"
)

# Events not yet handled by a shard: everything not visible in its low snapshot.
LAG: Final = (
    "SELECT count(*), min(recorded_at) FROM {events} "
    "WHERE (transaction_id >= %(from_xid)s::text::xid8 "
    "OR transaction_id = ANY(%(extra_xids)s::text[]::xid8[])) "
    "AND (%(shards)s = 1 OR shard_key %% %(shards)s = %(shard)s)"
)

OLDEST_TRANSACTION: Final = (
    "SELECT pid, now() - xact_start AS age, backend_xid::text::bigint FROM pg_stat_activity "
    "WHERE backend_xid IS NOT NULL ORDER BY xact_start LIMIT 1"
)


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionStatements:
    """Holds every subscription statement rendered for one schema, as bytes."""

    window_page: bytes
    live_page: bytes
    current_snapshot: bytes
    window_start: bytes
    create_checkpoints: bytes
    shard_counts: bytes
    heartbeat: bytes
    leave: bytes
    renew_leases: bytes
    claim_shards: bytes
    release_shard: bytes
    load_checkpoint: bytes
    save_checkpoint: bytes
    finish_cycle: bytes
    halt_shard: bytes
    note_error: bytes
    set_status: bytes
    reset: bytes
    lows: bytes
    held_streams: bytes
    park: bytes
    list_dead_letters: bytes
    parked_of_stream: bytes
    parked_streams: bytes
    read_positions: bytes
    set_dead_letter_status: bytes
    lock_checkpoint: bytes
    status: bytes
    lag: bytes
    oldest_transaction: bytes


def render(schema: str) -> SubscriptionStatements:
    """Renders all statements for a schema, quoting its name as an identifier."""
    names = {
        table: sql.Identifier(schema, table)
        for table in ("events", "checkpoints", "runners", "dead_letters")
    }
    fields = {f.name: f.name.upper() for f in dataclasses.fields(SubscriptionStatements)}
    module = globals()
    return SubscriptionStatements(
        **{
            field: sql.SQL(module[constant]).format(**names).as_bytes(None)
            for field, constant in fields.items()
        }
    )
