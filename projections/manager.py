# Generated from manager_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
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

import time
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.sql import Composed
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from eventstore._acompat import sleep
from eventstore.errors import ConfigurationError, SubscriptionNotFoundError, WaitTimeoutError
from eventstore.postgres.subscriptions import SubscriptionStore
from eventstore.store import AppendResult
from eventstore.subscriptions.window import PgSnapshot, covers
from projections import sql
from projections.errors import (
    ProjectionError,
    ProjectionNotFoundError,
    ProjectionStateError,
    ProjectionTablesMissingError,
    ProjectionVersionBackwardsError,
)
from projections.projection import AnyProjection
from projections.records import ProjectionStatus, ProjectionVersion, subscription_name

__all__ = ["ProjectionManager"]

Conn = psycopg.Connection[Any]
ProjectionRef = AnyProjection | type[AnyProjection] | str
_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _name_of(projection: ProjectionRef) -> str:
    return projection if isinstance(projection, str) else projection.name


class ProjectionManager:
    """Prepares, switches and drops projection versions; waits for them; reports on them.

    It works through a subscription store (its connection pool and schema), so it is cheap
    to create next to one: ``AsyncProjectionManager(subscriptions)``.
    """

    def __init__(self, subscriptions: SubscriptionStore) -> None:
        self.subscriptions = subscriptions
        self.schema = subscriptions.schema
        self._sql = sql.render(subscriptions.schema)

    def _rows(
        self, conn: Conn, statement: bytes | Composed, params: Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        with conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description is not None else []

    def _lock(self, conn: Conn, name: str) -> list[ProjectionVersion]:
        """Takes the name's lock (prepare, switch and drop wait for each other); returns its
        versions."""
        self._rows(conn, self._sql.lock_name, sql.lock_params(name))
        rows = self._rows(conn, self._sql.versions, {"name": name})
        return [ProjectionVersion(*row) for row in rows]

    # Reading.

    def versions(self, name: str | None = None) -> list[ProjectionVersion]:
        """Returns the registered versions of one projection, or of all, by name and version."""
        with self.subscriptions.transaction() as conn:
            rows = self._rows(conn, self._sql.versions, {"name": name})
        return [ProjectionVersion(*row) for row in rows]

    def live_version(self, projection: ProjectionRef) -> int | None:
        """Returns the version serving reads, or None when none is registered."""
        with self.subscriptions.transaction() as conn:
            rows = self._rows(conn, self._sql.live_version, {"name": _name_of(projection)})
        return int(rows[0][0]) if rows else None

    def tables(self, name: str, version: int) -> list[tuple[str, str, str]]:
        """Returns ``(schema, table, declared name)`` of each table a version owns."""
        with self.subscriptions.transaction() as conn:
            return self._tables(conn, name, version)

    def _tables(self, conn: Conn, name: str, version: int) -> list[tuple[str, str, str]]:
        prefix = sql.table_comment_prefix(name, version)
        rows = self._rows(conn, self._sql.tagged_tables, {"prefix": prefix})
        found = []
        for schema, table, comment in rows:
            parsed = sql.parse_table_comment(comment)
            if parsed is not None:
                found.append((str(schema), str(table), parsed[2]))
        return found

    def status(self, name: str | None = None) -> list[ProjectionStatus]:
        """Returns every version with its subscription's shards (lag, dead letters)."""
        found = []
        for version in self.versions(name):
            shards = self.subscriptions.status(version.subscription)
            tables = self.tables(version.name, version.version)
            found.append(
                ProjectionStatus(version, tuple(shards), tuple(f"{s}.{t}" for s, t, _ in tables))
            )
        return found

    # Preparing a version.

    def prepare(
        self, projection: AnyProjection, *, create_tables: bool = True
    ) -> ProjectionVersion:
        """Registers a projection version, creating its tables unless told not to.

        The first version of a name goes live at once (its views are created); a later one
        is registered as building, beside the live one, until `switch`. Raises
        `ProjectionVersionBackwardsError` for a version below the live one,
        `ProjectionStateError` for a retired one, and `ProjectionTablesMissingError` when
        ``create_tables`` is False and a table does not exist.
        """
        name, version = projection.name, projection.version
        with self.subscriptions.transaction() as conn:
            rows = self._lock(conn, name)
            live = next((r for r in rows if r.status == "live"), None)
            own = next((r for r in rows if r.version == version), None)
            # Retired first: a deployment from before a switch may restart after it.
            if own is not None and own.status == "retired":
                raise ProjectionStateError(
                    name, version, "retired", "a retired version never runs again"
                )
            if live is not None and version < live.version:
                raise ProjectionVersionBackwardsError(name, version, live.version)
            self._ensure_tables(conn, projection, create_tables)
            if own is None:
                status = "live" if live is None else "building"
                params = {"name": name, "version": version, "status": status}
                self._rows(conn, self._sql.register_version, params)
            if (own is None and live is None) or (own is not None and own.status == "live"):
                self._point_views(conn, name, version, None, only_missing=own is not None)
            rows = self._lock(conn, name)
        return next(r for r in rows if r.version == version)

    def _ensure_tables(self, conn: Conn, projection: AnyProjection, create: bool) -> None:
        """Creates the version's missing tables (or refuses), and tags each with a comment."""
        name, version = projection.name, projection.version
        tables = projection.versioned_tables()
        existing: dict[tuple[str, str], tuple[str, str | None]] = {}
        for schema in sorted({str(t.schema) for t in tables}):
            params = {"schema": schema, "names": [t.name for t in tables if t.schema == schema]}
            for relname, kind, comment in self._rows(conn, self._sql.existing_relations, params):
                existing[(schema, relname)] = (kind, comment)
        missing = [t for t in tables if (str(t.schema), t.name) not in existing]
        if missing and not create:
            shown = [f"{t.schema}.{t.name}" for t in missing]
            raise ProjectionTablesMissingError(name, version, shown)
        for schema in sorted({str(t.schema) for t in missing}):
            self._rows(conn, sql.ddl(sql.CREATE_SCHEMA, schema=schema))
        for table in missing:
            self._rows(conn, str(CreateTable(table).compile(dialect=_DIALECT)).encode())
            for index in table.indexes:
                self._rows(conn, str(CreateIndex(index).compile(dialect=_DIALECT)).encode())
        for base, table in zip(projection.__versioned__, tables, strict=True):
            kind, comment = existing.get((str(table.schema), table.name), ("r", None))
            if kind not in ("r", "p"):
                raise ConfigurationError(f"{table.schema}.{table.name} exists and is not a table")
            wanted = sql.table_comment(name, version, base)
            if comment != wanted:
                statement = sql.ddl(
                    sql.COMMENT_TABLE, table=(str(table.schema), table.name), comment=wanted
                )
                self._rows(conn, statement)

    def _point_views(
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
        tables = self._tables(conn, name, version)
        for schema, table, base in tables:
            relations = self._rows(
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
            self._replace_view(conn, (schema, base), (schema, table))
        if previous is not None:
            kept = {(schema, base) for schema, _, base in tables}
            for schema, _, base in self._tables(conn, name, previous):
                if (schema, base) not in kept:
                    self._rows(conn, sql.ddl(sql.DROP_VIEW, view=(schema, base)))

    def _replace_view(self, conn: Conn, view: tuple[str, str], table: tuple[str, str]) -> None:
        try:
            with conn.transaction():  # a savepoint: a refused replace leaves the rest
                self._rows(conn, sql.ddl(sql.REPLACE_VIEW, view=view, table=table))
        except psycopg.errors.InvalidTableDefinition:  # columns dropped, renamed or retyped
            self._rows(conn, sql.ddl(sql.DROP_VIEW, view=view))
            self._rows(conn, sql.ddl(sql.CREATE_VIEW, view=view, table=table))

    # Switching.

    def switch(
        self, name: str, version: int | None = None, *, timeout: float = 30.0
    ) -> ProjectionVersion:
        """Makes a building version live once it has caught up (see the module docstring).

        Without ``version``, the highest building one. Switching to the live version does
        nothing. Raises `WaitTimeoutError` when the version does not catch up within
        ``timeout`` seconds (nothing changes then), `ProjectionStateError` when there is
        nothing to switch to.
        """
        rows = self.versions(name)
        target = _switch_target(name, rows, version)
        if target.status == "live":
            return target
        deadline = time.monotonic() + timeout
        self.subscriptions.wait_until_caught_up(target.subscription, timeout=timeout)
        try:
            switched, retired = self._commit_switch(name, target.version, deadline)
        except psycopg.errors.LockNotAvailable as exc:  # lock_timeout: nothing was changed
            raise ProjectionError(
                f"projection {name!r}: the switch to version {target.version} gave up waiting "
                "for a lock (a long read of a view, or a long batch of the live version); "
                "nothing changed, try again"
            ) from exc
        for old in retired:  # retired versions stop asking (their batches apply nothing)
            self.subscriptions.set_status(subscription_name(name, old), "paused")
        return switched

    def _commit_switch(
        self, name: str, version: int, deadline: float
    ) -> tuple[ProjectionVersion, list[int]]:
        with self.subscriptions.transaction() as conn:
            self._rows(conn, sql.LOCK_TIMEOUT.encode())
            rows = self._lock(conn, name)
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
                # From here the old version's batches wait at their status read: its
                # tables are frozen, and the new version must have all they hold.
                params = {"name": name, "version": live.version}
                self._rows(conn, self._sql.lock_version, params)
                remaining = max(0.0, deadline - time.monotonic())
                self._wait_covering(conn, target.subscription, live.subscription, remaining)
            params = {"name": name, "version": version}
            retired = [int(r[0]) for r in self._rows(conn, self._sql.retire_for_switch, params)]
            self._rows(conn, self._sql.promote, params)
            self._point_views(conn, name, version, None if live is None else live.version)
            rows = self._lock(conn, name)
        switched = next(r for r in rows if r.version == version)
        return switched, retired

    def _wait_covering(self, conn: Conn, new: str, old: str, timeout: float) -> None:
        """Waits until every shard of ``new`` has handled everything ``old`` may have applied.

        What ``old`` may have applied reaches its open windows' high snapshots (a window is
        handled page by page); what ``new`` has surely handled is its low snapshots.
        """
        deadline = time.monotonic() + timeout
        while True:
            rows = self._rows(conn, self._sql.reached, {"subscription": old})
            reached = [PgSnapshot.parse(snapshot) for _, snapshot in rows]
            lows = (self.subscriptions.lows(new)).values()
            if lows and all(covers(low, r) for low in lows for r in reached):
                return
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(new, timeout)
            sleep(0.02)

    # Dropping.

    def drop(self, name: str, version: int, *, force: bool = False) -> list[str]:
        """Drops a retired version's tables and forgets its subscription; returns the tables.

        The live version is never dropped. A building version (an abandoned rebuild) is
        dropped only with ``force=True``, and not while a runner builds it.
        """
        subscription = subscription_name(name, version)
        with self.subscriptions.transaction() as conn:
            rows = self._lock(conn, name)
            row = next((r for r in rows if r.version == version), None)
            if row is None:
                raise ProjectionNotFoundError(name, version)
            if row.status == "live":
                raise ProjectionStateError(
                    name, version, "live", "the live version is never dropped; switch first"
                )
            if row.status == "building":
                self._check_abandoned(conn, row, force)
            tables = self._tables(conn, name, version)
            for schema, table, _ in tables:
                self._rows(conn, sql.ddl(sql.DROP_TABLE, table=(schema, table)))
            params = {"subscription": subscription}
            for statement in (
                self._sql.delete_dead_letters,
                self._sql.delete_checkpoints,
                self._sql.delete_runners,
            ):
                self._rows(conn, statement, params)
            self._rows(conn, self._sql.delete_version, {"name": name, "version": version})
        return [f"{schema}.{table}" for schema, table, _ in tables]

    def _check_abandoned(self, conn: Conn, row: ProjectionVersion, force: bool) -> None:
        if not force:
            raise ProjectionStateError(
                row.name, row.version, "building", "pass force=True to abandon the rebuild"
            )
        owners = self._rows(conn, self._sql.live_owners, {"subscription": row.subscription})
        if owners:
            raise ProjectionStateError(
                row.name,
                row.version,
                "building",
                f"runner {owners[0][0]} is building it; stop it first",
            )

    # Waiting.

    def wait_for(
        self, projection: ProjectionRef, result: AppendResult, *, timeout: float = 10.0
    ) -> None:
        """Returns once the live version of ``projection`` has handled the append ``result``.

        Read-your-writes for a web handler: append, wait, then read the read model through
        its view. The live version is looked up as it waits, so a switch meanwhile does not
        leave it waiting on the retired one. Raises `WaitTimeoutError` after ``timeout``
        seconds, `ProjectionNotFoundError` when no version of it is live by then.
        """
        name = _name_of(projection)
        deadline = time.monotonic() + timeout
        while True:
            live = self.live_version(name)
            remaining = deadline - time.monotonic()
            if live is not None:
                try:
                    self.subscriptions.wait_for(
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
                sleep(0.05)

    def wait_until_caught_up(
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
            version = self.live_version(name)
            if version is None:
                if time.monotonic() >= deadline:
                    raise ProjectionNotFoundError(name)
                sleep(0.05)
        remaining = max(0.0, deadline - time.monotonic())
        self.subscriptions.wait_until_caught_up(subscription_name(name, version), timeout=remaining)


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
