"""The projection versions' lifecycle: prepare, switch blue/green, drop, status, wait.

`manager_async.py` is the source and `manager.py` its generated sync twin (see
`tools/async_to_sync.py`).

Versions live in ``<schema>.projections``: ``building`` (being rebuilt from the start of the
log beside the live one), ``live`` (its tables serve reads, through views named like the
declared tables), ``retired`` (switched away from; its tables stay until dropped). One
version per name is live (a partial unique index). Prepare, switch and drop of one name are
serialised by a transaction-level advisory lock.

A switch makes the new version live only once it has handled everything the old one had:

1. wait until the new version has caught up with the log;
2. in ONE transaction: lock the old version's row, which every batch of the old version
   reads ``FOR SHARE`` before it applies anything (see `projections.subscription`), so
   its tables stop moving; wait until the new version has handled everything the old one
   may have applied (its every shard's low snapshot covers each old shard's open window's
   high, or its low between windows; the new version keeps running meanwhile); retire the
   old version, make the new one live, and point every view at the new version's tables.

Readers see the old tables or the new ones, never a mix, and never a model behind what they
saw before. Nothing is left half done: a switch that fails or dies (a timeout, a crash)
rolls back, and the old version carries on. Afterwards the retired version's subscription
is paused, so its runners stop asking.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.sql import Composed
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from eventstore._acompat import asleep
from eventstore.errors import (
    ConfigurationError,
    SchemaNotMigratedError,
    SubscriptionNotFoundError,
    WaitTimeoutError,
)
from eventstore.postgres.subscriptions_async import AsyncSubscriptionStore
from eventstore.store import AppendResult
from eventstore.subscriptions.window import NOTHING_SEEN, PgSnapshot, Window, covers
from projections import sql
from projections.errors import (
    ProjectionError,
    ProjectionNotFoundError,
    ProjectionStateError,
    ProjectionTablesMissingError,
    ProjectionVersionBackwardsError,
)
from projections.projection import AnyProjection
from projections.records import (
    InlineWindow,
    Mode,
    ProjectionStatus,
    ProjectionVersion,
    subscription_name,
)

__all__ = ["AsyncProjectionManager"]

logger = logging.getLogger("projections")

Conn = psycopg.AsyncConnection[Any]
ProjectionRef = AnyProjection | type[AnyProjection] | str
# Where a new version starts: a read_all token, or a global position.
Start = str | int | None
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _name_of(projection: ProjectionRef) -> str:
    return projection if isinstance(projection, str) else projection.name


class AsyncProjectionManager:
    """Prepares, switches and drops projection versions; waits for them; reports on them.

    It works through a subscription store (its connection pool and schema), so it is cheap
    to create next to one: ``AsyncProjectionManager(subscriptions)``.
    """

    def __init__(self, subscriptions: AsyncSubscriptionStore) -> None:
        self.subscriptions = subscriptions
        self.schema = subscriptions.schema
        self._sql = sql.render(subscriptions.schema)

    async def _rows(
        self, conn: Conn, statement: bytes | Composed, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        async with conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(statement, params)
            return await cur.fetchall() if cur.description is not None else []

    async def _lock(self, conn: Conn, name: str) -> list[ProjectionVersion]:
        """Takes the name's lock (prepare, switch and drop wait for each other); returns its
        versions."""
        await self._rows(conn, self._sql.lock_name, sql.lock_params(name))
        rows = await self._rows(conn, self._sql.versions, {"name": name})
        return [ProjectionVersion(*row) for row in rows]

    # Reading.

    async def versions(self, name: str | None = None) -> list[ProjectionVersion]:
        """Returns the registered versions of one projection, or of all, by name and version."""
        async with self.subscriptions.transaction() as conn:
            rows = await self._rows(conn, self._sql.versions, {"name": name})
        return [ProjectionVersion(*row) for row in rows]

    async def live_version(self, projection: ProjectionRef) -> int | None:
        """Returns the version serving reads, or None when none is registered."""
        async with self.subscriptions.transaction() as conn:
            rows = await self._rows(conn, self._sql.live_version, {"name": _name_of(projection)})
        return int(rows[0][0]) if rows else None

    async def tables(self, name: str, version: int) -> list[tuple[str, str, str]]:
        """Returns ``(schema, table, declared name)`` of each table a version owns."""
        async with self.subscriptions.transaction() as conn:
            return await self._tables(conn, name, version)

    async def _tables(self, conn: Conn, name: str, version: int) -> list[tuple[str, str, str]]:
        prefix = sql.table_comment_prefix(name, version)
        rows = await self._rows(conn, self._sql.tagged_tables, {"prefix": prefix})
        found = []
        for schema, table, comment in rows:
            parsed = sql.parse_table_comment(comment)
            if parsed is not None:
                found.append((str(schema), str(table), parsed[2]))
        return found

    async def status(self, name: str | None = None) -> list[ProjectionStatus]:
        """Returns every version with its subscription's shards (lag, dead letters)."""
        found = []
        for version in await self.versions(name):
            shards = await self.subscriptions.status(version.subscription)
            tables = await self.tables(version.name, version.version)
            found.append(
                ProjectionStatus(version, tuple(shards), tuple(f"{s}.{t}" for s, t, _ in tables))
            )
        return found

    # Preparing a version.

    async def prepare(
        self, projection: AnyProjection, *, create_tables: bool = True, start: Start = None
    ) -> ProjectionVersion:
        """Registers a projection version, creating its tables unless told not to.

        The first version of a name goes live at once (its views are created); a later one
        is registered as building, beside the live one, until `switch`. Raises
        `ProjectionVersionBackwardsError` for a version below the live one,
        `ProjectionStateError` for a retired one, and `ProjectionTablesMissingError` when
        ``create_tables`` is False and a table does not exist.

        ``start`` builds a new version from a place in the log instead of its beginning
        (an incremental fix): a `read_all` token (exactly the events after that page), or
        a global position (the events above it that had committed by now, then every event
        committed later). It applies only to a version whose subscription has no
        checkpoints yet; whatever its tables must hold from before that place is for you
        to put there (in the same transaction as ``prepare``, or before the daemon runs).
        """
        name, version = projection.name, projection.version
        modes = await self._ensure_modes_table()
        async with self.subscriptions.transaction() as conn:
            rows = await self._lock(conn, name)
            live = next((r for r in rows if r.status == "live"), None)
            own = next((r for r in rows if r.version == version), None)
            # Retired first: a deployment from before a switch may restart after it.
            if own is not None and own.status == "retired":
                raise ProjectionStateError(
                    name, version, "retired", "a retired version never runs again"
                )
            if live is not None and version < live.version:
                raise ProjectionVersionBackwardsError(name, version, live.version)
            await self._ensure_tables(conn, projection, create_tables)
            if own is None:
                status = "live" if live is None else "building"
                params = {"name": name, "version": version, "status": status}
                await self._rows(conn, self._sql.register_version, params)
            if modes:
                params = {"name": name, "version": version}
                await self._rows(conn, self._sql.register_mode, params)
            if start is not None:
                await self._start_at(conn, projection, start)
            if (own is None and live is None) or (own is not None and own.status == "live"):
                await self._point_views(conn, name, version, None, only_missing=own is not None)
            rows = await self._lock(conn, name)
        return next(r for r in rows if r.version == version)

    async def _ensure_modes_table(self, *, required: bool = False) -> bool:
        """Checks that the table of inline windows exists (migration 0008 creates it).

        On a database not migrated that far, creates it as 0008 would (see `sql`) when this
        role may; a role that may not (an application role given only `eventstore
        grants`) runs every projection in daemon mode: returns False, or raises
        `SchemaNotMigratedError` when ``required``.
        """
        table = sql.modes_table(self.schema)
        try:
            async with self.subscriptions.transaction() as conn:
                if (await self._rows(conn, self._sql.modes_exist, {"table": table}))[0][0]:
                    return True
                await self._rows(conn, self._sql.lock_modes_ddl, sql.lock_params(""))
                await self._rows(conn, self._sql.create_modes)
        except psycopg.errors.InsufficientPrivilege as exc:
            if required:
                raise SchemaNotMigratedError(
                    f"inline mode needs the table {table}, which this role may not create "
                    f"({exc.diag.message_primary}): run `eventstore migrate` (revision "
                    "0008_projection_modes creates it), then `eventstore grants` for this role"
                ) from exc
            logger.warning(
                "no %s and no right to create it: projections run in daemon mode only "
                "until `eventstore migrate` creates it",
                table,
            )
            return False
        return True

    async def _start_at(self, conn: Conn, projection: AnyProjection, start: str | int) -> None:
        """Creates the version's checkpoints at ``start``, unless it has checkpoints."""
        subscription = projection.subscription_name()
        params: dict[str, Any] = {"subscription": subscription}
        if (await self._rows(conn, self._sql.has_checkpoints, params))[0][0]:
            return
        if isinstance(start, bool) or not isinstance(start, str | int):
            raise ConfigurationError("start must be a read_all token or a global position")
        if isinstance(start, int):
            if start < 0:
                raise ConfigurationError("start: a global position is >= 0")
            window = Window(NOTHING_SEEN, await self._snapshot(conn), start)
        else:
            window = Window.from_token(start)
        params |= {
            "shards": projection.shards,
            "low": str(window.low),
            "high": None if window.high is None else str(window.high),
            "position": window.position,
        }
        await self._rows(conn, self._sql.create_checkpoints_at, params)

    async def _ensure_tables(self, conn: Conn, projection: AnyProjection, create: bool) -> None:
        """Creates the version's missing tables (or refuses), and tags each with a comment."""
        name, version = projection.name, projection.version
        tables = projection.versioned_tables()
        existing: dict[tuple[str, str], tuple[str, str | None]] = {}
        for schema in sorted({str(t.schema) for t in tables}):
            params = {"schema": schema, "names": [t.name for t in tables if t.schema == schema]}
            for relname, kind, comment in await self._rows(
                conn, self._sql.existing_relations, params
            ):
                existing[(schema, relname)] = (kind, comment)
        missing = [t for t in tables if (str(t.schema), t.name) not in existing]
        if missing and not create:
            shown = [f"{t.schema}.{t.name}" for t in missing]
            raise ProjectionTablesMissingError(name, version, shown)
        for schema in sorted({str(t.schema) for t in missing}):
            await self._rows(conn, sql.ddl(sql.CREATE_SCHEMA, schema=schema))
        for table in missing:
            await self._rows(conn, str(CreateTable(table).compile(dialect=_DIALECT)).encode())
            for index in table.indexes:
                await self._rows(conn, str(CreateIndex(index).compile(dialect=_DIALECT)).encode())
        for base, table in zip(projection.__versioned__, tables, strict=True):
            kind, comment = existing.get((str(table.schema), table.name), ("r", None))
            if kind not in ("r", "p"):
                raise ConfigurationError(f"{table.schema}.{table.name} exists and is not a table")
            wanted = sql.table_comment(name, version, base)
            if comment != wanted:
                statement = sql.ddl(
                    sql.COMMENT_TABLE, table=(str(table.schema), table.name), comment=wanted
                )
                await self._rows(conn, statement)

    async def _point_views(
        self,
        conn: Conn,
        name: str,
        version: int,
        previous: int | None,
        *,
        only_missing: bool = False,
    ) -> None:
        """Points each view (the declared table name) at this version's table.

        ``CREATE OR REPLACE VIEW`` keeps views that depend on it working, but cannot drop or
        change columns; a version whose columns differ gets the view dropped and created
        again, in the same transaction. Views of the previous version's tables that this
        version no longer has are dropped.
        """
        tables = await self._tables(conn, name, version)
        for schema, table, base in tables:
            relations = await self._rows(
                conn, self._sql.existing_relations, {"schema": schema, "names": [base]}
            )
            kind = relations[0][1] if relations else None
            if kind not in (None, "v"):
                raise ConfigurationError(
                    f"{schema}.{base} exists and is not a view: the projection {name!r} "
                    "serves its reads under that name"
                )
            if kind == "v" and only_missing:
                continue
            await self._replace_view(conn, (schema, base), (schema, table))
        if previous is not None:
            kept = {(schema, base) for schema, _, base in tables}
            for schema, _, base in await self._tables(conn, name, previous):
                if (schema, base) not in kept:
                    await self._rows(conn, sql.ddl(sql.DROP_VIEW, view=(schema, base)))

    async def _replace_view(
        self, conn: Conn, view: tuple[str, str], table: tuple[str, str]
    ) -> None:
        try:
            async with conn.transaction():  # a savepoint: a refused replace leaves the rest
                await self._rows(conn, sql.ddl(sql.REPLACE_VIEW, view=view, table=table))
        except psycopg.errors.InvalidTableDefinition:  # columns dropped, renamed or retyped
            await self._rows(conn, sql.ddl(sql.DROP_VIEW, view=view))
            await self._rows(conn, sql.ddl(sql.CREATE_VIEW, view=view, table=table))

    # Switching.

    async def switch(
        self, name: str, version: int | None = None, *, timeout: float = 30.0
    ) -> ProjectionVersion:
        """Makes a building version live once it has caught up (see the module docstring).

        Without ``version``, the highest building one. Switching to the live version does
        nothing. Raises `WaitTimeoutError` when the version does not catch up within
        ``timeout`` seconds (nothing changes then), `ProjectionStateError` when there is
        nothing to switch to.
        """
        rows = await self.versions(name)
        target = _switch_target(name, rows, version)
        if target.status == "live":
            return target
        deadline = time.monotonic() + timeout
        await self.subscriptions.wait_until_caught_up(target.subscription, timeout=timeout)
        try:
            switched, retired = await self._commit_switch(name, target.version, deadline)
        except psycopg.errors.LockNotAvailable as exc:  # lock_timeout: nothing was changed
            raise ProjectionError(
                f"projection {name!r}: the switch to version {target.version} gave up waiting "
                "for a lock (a long read of a view, or a long batch of the live version); "
                "nothing changed, try again"
            ) from exc
        for old in retired:  # retired versions stop asking (their batches apply nothing)
            await self.subscriptions.set_status(subscription_name(name, old), "paused")
        return switched

    async def _commit_switch(
        self, name: str, version: int, deadline: float
    ) -> tuple[ProjectionVersion, list[int]]:
        async with self.subscriptions.transaction() as conn:
            await self._rows(conn, sql.LOCK_TIMEOUT.encode())
            rows = await self._lock(conn, name)
            target = next((r for r in rows if r.version == version), None)
            if target is not None and target.status == "live":
                return target, []  # switched meanwhile, by another daemon or command
            if target is None or target.status != "building":
                raise ProjectionStateError(
                    name,
                    version,
                    "gone" if target is None else target.status,
                    "another switch or drop happened meanwhile",
                )
            live = next((r for r in rows if r.status == "live"), None)
            if live is not None:
                # From here the old version's batches (and inline applications) wait at
                # their status read: its tables are frozen, and the new version must have
                # all they hold.
                params = {"name": name, "version": live.version}
                await self._rows(conn, self._sql.lock_version, params)
                inline = await self._window_if_any(conn, name, live.version)
                # What the old version applied inline is in transactions finished now.
                extra = None if inline is None else await self._snapshot(conn)
                remaining = max(0.0, deadline - time.monotonic())
                await self._wait_covering(
                    conn, target.subscription, live.subscription, remaining, extra
                )
            params = {"name": name, "version": version}
            retired = [
                int(r[0]) for r in await self._rows(conn, self._sql.retire_for_switch, params)
            ]
            await self._rows(conn, self._sql.promote, params)
            await self._point_views(conn, name, version, None if live is None else live.version)
            rows = await self._lock(conn, name)
        switched = next(r for r in rows if r.version == version)
        return switched, retired

    async def _wait_covering(
        self, conn: Conn, new: str, old: str, timeout: float, extra: PgSnapshot | None = None
    ) -> None:
        """Waits until every shard of ``new`` has handled everything ``old`` may have applied.

        What ``old`` may have applied reaches its open windows' high snapshots (a window is
        handled page by page), and ``extra`` (what it applied inline); what ``new`` has
        surely handled is its low snapshots.
        """
        deadline = time.monotonic() + timeout
        while True:
            rows = await self._rows(conn, self._sql.reached, {"subscription": old})
            reached = [PgSnapshot.parse(snapshot) for _, snapshot in rows]
            if extra is not None:
                reached.append(extra)
            lows = (await self.subscriptions.lows(new)).values()
            if lows and all(covers(low, r) for low in lows for r in reached):
                return
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(new, timeout)
            await asleep(0.02)

    # Inline mode.

    async def _snapshot(self, conn: Conn) -> PgSnapshot:
        """Returns the current snapshot as other sessions see it: with this transaction
        (which holds a row lock, so has an id) still running."""
        text, own = (await self._rows(conn, self._sql.current_snapshot))[0]
        return _running(PgSnapshot.parse(text), None if own is None else int(own))

    async def _window(self, conn: Conn, name: str, version: int) -> InlineWindow | None:
        rows = await self._rows(conn, self._sql.mode_of, {"name": name, "version": version})
        return InlineWindow.of(*rows[0]) if rows else None

    async def _window_if_any(self, conn: Conn, name: str, version: int) -> InlineWindow | None:
        """Returns the version's inline window; None when there is no table of them."""
        try:
            async with conn.transaction():  # a savepoint: the table may not exist
                return await self._window(conn, name, version)
        except psycopg.errors.UndefinedTable:
            return None

    async def inline_window(self, projection: ProjectionRef) -> InlineWindow | None:
        """Returns the live version's inline window (None: it was never inline)."""
        name = _name_of(projection)
        modes = await self._ensure_modes_table()
        async with self.subscriptions.transaction() as conn:
            rows = await self._rows(conn, self._sql.live_version, {"name": name})
            if not rows:
                raise ProjectionNotFoundError(name)
            return await self._window(conn, name, int(rows[0][0])) if modes else None

    async def mode(self, projection: ProjectionRef) -> Mode:
        """Returns how the live version is kept now: ``"inline"`` or ``"daemon"``."""
        window = await self.inline_window(projection)
        return "inline" if window is not None and window.is_open else "daemon"

    async def set_mode(
        self, projection: ProjectionRef, mode: Mode, *, timeout: float = 30.0
    ) -> InlineWindow | None:
        """Switches the live version to being applied inline, or back to the daemon.

        To ``"inline"``: in one transaction, the version's mode row is locked (appending
        transactions that apply it inline wait at their read of it, those in flight finish
        first), a snapshot is taken, the daemon is waited for until it has handled every
        transaction in that snapshot (it keeps running meanwhile), and the snapshot is
        recorded as where inline application starts. Appends after it apply their own
        events; the daemon skips them. Nothing is applied twice or missed, and no event is
        applied before an earlier one of its stream.

        To ``"daemon"``: in one transaction, the mode row is locked, a snapshot is taken
        (every transaction that applied events inline is in it) and recorded as where
        inline application ended; the daemon handles every transaction after it.

        Raises `WaitTimeoutError` when the daemon does not catch up within ``timeout``
        (nothing changes then; `SubscriptionNotFoundError` when it never ran),
        `ProjectionStateError` when the version has dead letters (retry or discard them
        first), `ProjectionNotFoundError` when nothing is live, `SchemaNotMigratedError` when
        the table of inline windows is missing (the database is not migrated to
        0008_projection_modes) and this role may not create it. Returns the version's
        inline window afterwards.
        """
        if mode not in ("inline", "daemon"):
            raise ConfigurationError(f"mode must be 'inline' or 'daemon', not {mode!r}")
        name = _name_of(projection)
        await self._ensure_modes_table(required=True)
        live = await self.live_version(name)
        if live is None:
            raise ProjectionNotFoundError(name)
        subscription = subscription_name(name, live)
        deadline = time.monotonic() + timeout
        if mode == "inline":
            await self._check_no_dead_letters(name, live)
            # Catch up first, without holding anything: appends wait less at the switch.
            await self.subscriptions.wait_until_caught_up(subscription, timeout=timeout)
        try:
            async with self.subscriptions.transaction() as conn:
                await self._rows(conn, sql.LOCK_TIMEOUT.encode())
                rows = await self._lock(conn, name)
                if next((r.version for r in rows if r.status == "live"), None) != live:
                    raise ProjectionStateError(
                        name, live, "retired", "switched meanwhile; set the mode again"
                    )
                return await self._commit_mode(conn, name, live, mode, deadline, timeout)
        except psycopg.errors.LockNotAvailable as exc:
            raise ProjectionError(
                f"projection {name!r}: the mode switch gave up waiting for a lock (a long "
                "appending transaction); nothing changed, try again"
            ) from exc

    async def _commit_mode(
        self, conn: Conn, name: str, version: int, mode: Mode, deadline: float, timeout: float
    ) -> InlineWindow | None:
        params: dict[str, Any] = {"name": name, "version": version}
        locked = await self._rows(conn, self._sql.lock_mode, params)
        if not locked:
            raise ProjectionStateError(
                name, version, "live", "no mode row: run the daemon (or prepare) once first"
            )
        window = InlineWindow.of(*locked[0])
        inline_now = window is not None and window.is_open
        if (mode == "inline") == inline_now:
            return window
        now = await self._snapshot(conn)  # after the lock: no appender in flight is missed
        if mode == "inline":
            await self._wait_lows_cover(subscription_name(name, version), now, deadline, timeout)
            changed = InlineWindow(now)
        else:
            assert window is not None
            changed = InlineWindow(window.since, now)
        params |= {
            "inline_from": str(changed.since),
            "inline_until": None if changed.until is None else str(changed.until),
        }
        await self._rows(conn, self._sql.set_mode, params)
        return changed

    async def _check_no_dead_letters(self, name: str, version: int) -> None:
        shards = await self.subscriptions.status(subscription_name(name, version))
        if sum(s.dead_letters for s in shards):
            raise ProjectionStateError(
                name,
                version,
                "live",
                "it has dead letters: retry or discard them before going inline (a held "
                "stream's later events would otherwise be applied before its parked ones)",
            )

    async def _wait_lows_cover(
        self, subscription: str, target: PgSnapshot, deadline: float, timeout: float
    ) -> None:
        """Waits until every shard's low covers ``target`` (the daemon runs meanwhile)."""
        while True:
            lows = (await self.subscriptions.lows(subscription)).values()
            if lows and all(covers(low, target) for low in lows):
                return
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(subscription, timeout)
            await asleep(0.02)

    # Dropping.

    async def drop(self, name: str, version: int, *, force: bool = False) -> list[str]:
        """Drops a retired version's tables and forgets its subscription; returns the tables.

        The live version is never dropped. A building version (an abandoned rebuild) is
        dropped only with ``force=True``, and not while a runner builds it.
        """
        subscription = subscription_name(name, version)
        modes = await self._ensure_modes_table()
        async with self.subscriptions.transaction() as conn:
            rows = await self._lock(conn, name)
            row = next((r for r in rows if r.version == version), None)
            if row is None:
                raise ProjectionNotFoundError(name, version)
            if row.status == "live":
                raise ProjectionStateError(
                    name, version, "live", "the live version is never dropped; switch first"
                )
            if row.status == "building":
                await self._check_abandoned(conn, row, force)
            tables = await self._tables(conn, name, version)
            for schema, table, _ in tables:
                await self._rows(conn, sql.ddl(sql.DROP_TABLE, table=(schema, table)))
            params = {"subscription": subscription}
            for statement in (
                self._sql.delete_dead_letters,
                self._sql.delete_checkpoints,
                self._sql.delete_runners,
            ):
                await self._rows(conn, statement, params)
            if modes:
                key = {"name": name, "version": version}
                await self._rows(conn, self._sql.delete_mode, key)
            await self._rows(conn, self._sql.delete_version, {"name": name, "version": version})
        return [f"{schema}.{table}" for schema, table, _ in tables]

    async def _check_abandoned(self, conn: Conn, row: ProjectionVersion, force: bool) -> None:
        if not force:
            raise ProjectionStateError(
                row.name, row.version, "building", "pass force=True to abandon the rebuild"
            )
        owners = await self._rows(conn, self._sql.live_owners, {"subscription": row.subscription})
        if owners:
            raise ProjectionStateError(
                row.name,
                row.version,
                "building",
                f"runner {owners[0][0]} is building it; stop it first",
            )

    # Waiting.

    async def wait_for(
        self, projection: ProjectionRef, result: AppendResult, *, timeout: float = 10.0
    ) -> None:
        """Returns once the live version of ``projection`` has handled the append ``result``.

        Read-your-writes for a web handler: append, wait, then read the read model through
        its view. The live version is looked up as it waits, so a switch meanwhile does not
        leave it waiting on the retired one. Raises `WaitTimeoutError` after ``timeout``
        seconds, `ProjectionNotFoundError` when no version of it is live by then. When the
        live version is applied inline, an append whose own transaction applied it returns
        at once.
        """
        name = _name_of(projection)
        deadline = time.monotonic() + timeout
        while True:
            live = await self.live_version(name)
            remaining = deadline - time.monotonic()
            if live is not None and await self._applied_inline(name, live, result):
                return
            if live is not None:
                try:
                    await self.subscriptions.wait_for(
                        subscription_name(name, live), result, timeout=max(0.0, min(remaining, 1))
                    )
                    return
                except (WaitTimeoutError, SubscriptionNotFoundError):
                    pass
            if time.monotonic() >= deadline:
                if live is None:
                    raise ProjectionNotFoundError(name)
                raise WaitTimeoutError(subscription_name(name, live), timeout)
            if live is None:
                await asleep(0.05)

    async def _applied_inline(self, name: str, version: int, result: AppendResult) -> bool:
        """Tells whether the append's own transaction applied this version inline."""
        async with self.subscriptions.transaction() as conn:
            window = await self._window_if_any(conn, name, version)
        return window is not None and window.applied_inline(result.transaction_id)

    async def wait_until_caught_up(
        self, projection: ProjectionRef, *, version: int | None = None, timeout: float = 10.0
    ) -> None:
        """Returns once a version (the live one by default) has handled everything committed
        before the call: the deterministic "caught up" for tests.

        Raises `WaitTimeoutError` after ``timeout`` seconds, `ProjectionNotFoundError` when
        no version of it is live by then.
        """
        name = _name_of(projection)
        deadline = time.monotonic() + timeout
        while version is None:  # a daemon starting may not have registered it yet
            version = await self.live_version(name)
            if version is None:
                if time.monotonic() >= deadline:
                    raise ProjectionNotFoundError(name)
                await asleep(0.05)
        remaining = max(0.0, deadline - time.monotonic())
        await self.subscriptions.wait_until_caught_up(
            subscription_name(name, version), timeout=remaining
        )


def _running(snapshot: PgSnapshot, xid: int | None) -> PgSnapshot:
    """Returns ``snapshot`` with transaction ``xid`` in progress (as it is, for the others)."""
    if xid is None or not snapshot.visible(xid):
        return snapshot
    return PgSnapshot(min(snapshot.xmin, xid), snapshot.xmax, tuple(sorted({*snapshot.xip, xid})))


def _switch_target(
    name: str, rows: Sequence[ProjectionVersion], version: int | None
) -> ProjectionVersion:
    if not rows:
        raise ProjectionNotFoundError(name)
    if version is None:
        building = [r for r in rows if r.status == "building"]
        if not building:
            live = next((r for r in rows if r.status == "live"), rows[-1])
            raise ProjectionStateError(
                name, live.version, live.status, "nothing to switch to: no version is building"
            )
        return building[-1]
    target = next((r for r in rows if r.version == version), None)
    if target is None:
        raise ProjectionNotFoundError(name, version)
    if target.status == "retired":
        raise ProjectionStateError(name, version, "retired", "a retired version never runs again")
    return target
