"""Projections: read-model tables kept from events by typed handlers, one version at a time.

A projection declares its name, its version, its tables (SQLAlchemy Core, in a schema of
your choosing) and one handler per event class::

    balances = sa.Table(
        "balances",
        sa.MetaData(schema="read_models"),
        sa.Column("account", sa.Text, primary_key=True),
        sa.Column("balance", sa.BigInteger, nullable=False),
    )

    class Balances(Projection):
        name = "balances"
        version = 1
        tables = (balances,)

        @handles
        def deposited(self, event: RecordedEvent[Deposited], conn: sa.Connection) -> None:
            table = self.table("balances")  # balances_v1
            conn.execute(insert(table).values(...).on_conflict_do_update(...))

Each version writes to tables of its own (``balances_v1``, ``balances_v2``), so a new
version builds beside the old one; readers query the view named like the declared table
(``read_models.balances``), which points at the live version's table. Handlers get the
batch transaction's connection: what they write commits with the checkpoint, exactly once.
A handler may declare a ``replay`` parameter: it is True while the version is being built
(and for dead letters retried), so a side effect can be skipped.

A handler may also return its write instead of executing it: ``return Sql(upsert, params)``
(or a sequence of `Sql`). The default `handle_batch` collects the returned writes in event
order and runs each consecutive run of one statement in one go (``executemany``): the same
statement executions, in the same order, without a driver round of calls per event. See
`Sql` for the rule of when they run.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, TypeVar, overload

import psycopg
import sqlalchemy as sa
from psycopg import sql as pgsql

from eventstore.errors import ConfigurationError
from eventstore.events import Event, RecordedEvent
from eventstore.postgres.pipelined import execute_many
from eventstore.postgres.pipelined_async import execute_many as aexecute_many
from eventstore.registry import EventRegistry
from eventstore.subscriptions import FailurePolicy
from eventstore.subscriptions.subscription import ConnectionKind
from projections.errors import DuplicateProjectionError
from projections.records import subscription_name

__all__ = [
    "AsyncProjection",
    "Projection",
    "ProjectionGroup",
    "Sql",
    "handles",
]

F = TypeVar("F", bound=Callable[..., Any])

# Names appear in subscription names, logs and table comments: keep them plain.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,79}")
_MARK: Final = "__projections_handles__"
_MAX_IDENTIFIER: Final = 63  # Postgres truncates longer names (NAMEDATALEN - 1)


@overload
def handles(event_class: type[Event], /) -> Callable[[F], F]: ...


@overload
def handles(fn: F, /) -> F: ...


def handles(target: Any, /) -> Any:
    """Marks a method as the handler of one event class (read from its annotation or given).

    ``@handles`` reads the class from the event parameter's annotation,
    ``RecordedEvent[Deposited]``; ``@handles(Deposited)`` names it explicitly (needed for
    event classes defined inside functions). The handler is called as
    ``handler(self, event, conn)``, plus ``replay=`` when it declares that parameter.
    """
    if isinstance(target, type):

        def mark(fn: F) -> F:
            setattr(fn, _MARK, target)
            return fn

        return mark
    setattr(target, _MARK, None)
    return target


@dataclasses.dataclass(frozen=True, slots=True)
class Sql:
    """A write a ``@handles`` handler returns instead of executing it.

    ``statement`` is what the batch's connection executes: for a psycopg projection
    (``connection = "psycopg"``) a ``str``, ``bytes`` or ``psycopg.sql.Composable`` with
    ``params`` a tuple (or a mapping for ``%(name)s`` placeholders); for a SQLAlchemy one
    (``"sqlalchemy"`` or ``"session"``) an executable, e.g. ``insert(table)`` or
    ``sa.text(...)``, with ``params`` a mapping of its bind parameters. A handler returns
    ``None`` (it wrote nothing, or executed its own statements), one `Sql`, or a sequence
    of them.

    The default `Projection.handle_batch` runs the returned writes in event order (and
    each handler's in the order returned); each consecutive run of *the same statement*
    (the same object, or an equal ``str``, ``bytes`` or ``Composable``: build it once, not
    per event) runs in one go, executing the statement once per parameter set, exactly
    as executing them one by one: on psycopg with
    `eventstore.postgres.pipelined.execute_many` (one pipeline, one Sync), on SQLAlchemy
    with ``conn.execute(statement, [params, ...])``. Results are not read: no
    ``RETURNING``.

    When they run: pending writes run before any handler that is not *declared* to
    return writes (its return annotation does not name `Sql`, e.g. ``-> None``), and when
    `handle_batch` ends. So a handler that executes its own statements sees every earlier
    event's writes. A handler declared to return `Sql` runs while earlier events' returned
    writes may still be pending: if it also executes statements itself, those run before
    the pending writes.
    """

    statement: str | bytes | pgsql.Composable | sa.Executable
    params: Sequence[Any] | Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class _Handler:
    method: str
    replay: bool  # whether it takes ``replay=``
    returns: bool  # whether it is declared to return writes (`Sql`)


def _event_class_of(fn: Callable[..., Any]) -> type[Event]:
    explicit = getattr(fn, _MARK, None)
    if explicit is not None:
        return typing.cast(type[Event], explicit)
    params = list(inspect.signature(fn).parameters)
    where = f"@handles handler {fn.__qualname__}"
    if len(params) < 3:
        raise ConfigurationError(f"{where} must take (self, event, conn)")
    try:
        hint = typing.get_type_hints(fn).get(params[1])
    except NameError as exc:
        raise ConfigurationError(
            f"{where}: cannot resolve its annotation ({exc}); use @handles(EventClass)"
        ) from exc
    args = typing.get_args(hint)
    if typing.get_origin(hint) is RecordedEvent and args and _is_event_class(args[0]):
        return typing.cast(type[Event], args[0])
    raise ConfigurationError(
        f"{where}: annotate the event parameter as RecordedEvent[EventClass], "
        "or use @handles(EventClass)"
    )


def _is_event_class(value: object) -> bool:
    return isinstance(value, type) and issubclass(value, Event) and "event_type" in vars(value)


def _marked(klass: type) -> dict[type[Event], _Handler]:
    """Returns one class's own ``@handles`` methods by event class; two for one is an error."""
    found: dict[type[Event], _Handler] = {}
    for attribute, value in vars(klass).items():
        if callable(value) and hasattr(value, _MARK):
            event = _event_class_of(value)
            if event in found:
                raise ConfigurationError(
                    f"{klass.__qualname__} has two @handles handlers for "
                    f"{event.__qualname__}: {found[event].method} and {attribute}"
                )
            takes_replay = "replay" in inspect.signature(value).parameters
            found[event] = _Handler(attribute, takes_replay, _returns_writes(value))
    return found


_NAMES_SQL: Final = re.compile(r"\bSql\b")


def _returns_writes(fn: Callable[..., Any]) -> bool:
    """Tells whether a handler's return annotation names `Sql` (``-> Sql | None``,
    ``-> list[Sql]``); one that cannot be resolved is read as text."""
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:  # an unresolvable annotation (NameError, ...): read its text
        hint = getattr(fn, "__annotations__", {}).get("return")
    return _names_sql(hint)


def _names_sql(hint: Any) -> bool:
    if hint is Sql:
        return True
    if isinstance(hint, str):
        return bool(_NAMES_SQL.search(hint))
    if isinstance(hint, typing.ForwardRef):
        return bool(_NAMES_SQL.search(hint.__forward_arg__))
    return any(_names_sql(arg) for arg in typing.get_args(hint))


class _Writes:
    """Collects the writes handlers return, as runs of one statement, in order."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: list[tuple[Any, list[Any]]] = []

    def add(self, returned: object, handler: Callable[..., Any]) -> None:
        if isinstance(returned, Sql):
            self._add(returned)
        elif isinstance(returned, Sequence) and not isinstance(returned, str | bytes):
            for write in returned:
                if not isinstance(write, Sql):
                    raise _bad_return(handler, write)
                self._add(write)
        else:
            raise _bad_return(handler, returned)

    def _add(self, write: Sql) -> None:
        statement = write.statement
        if self.runs:
            last, params = self.runs[-1]
            if statement is last or (
                isinstance(statement, _COMPARABLE)
                and type(statement) is type(last)
                and statement == last
            ):
                params.append(write.params)
                return
        self.runs.append((statement, [write.params]))

    def take(self) -> list[tuple[Any, list[Any]]]:
        runs, self.runs = self.runs, []
        return runs


_COMPARABLE: Final = (str, bytes, pgsql.Composable)


def _bad_return(handler: Callable[..., Any], value: object) -> TypeError:
    name = getattr(handler, "__qualname__", repr(handler))
    return TypeError(
        f"@handles handler {name} returned {type(value).__qualname__}: return None, "
        "a projections.Sql or a sequence of them"
    )


def _run_writes(conn: Any, runs: list[tuple[Any, list[Any]]]) -> None:
    """Executes runs of writes on a psycopg connection, or a SQLAlchemy connection or
    session: a run of two or more in one go (`execute_many` on psycopg, an
    ``executemany`` on SQLAlchemy)."""
    if isinstance(conn, psycopg.Connection):
        for statement, params in runs:
            if len(params) == 1:
                conn.execute(statement, params[0])
            else:
                execute_many(conn, statement, [() if p is None else p for p in params])
        return
    for statement, params in runs:
        if len(params) == 1:
            conn.execute(statement, params[0])
        else:
            conn.execute(statement, [{} if p is None else p for p in params])


async def _run_writes_async(conn: Any, runs: list[tuple[Any, list[Any]]]) -> None:
    """Executes runs of writes as `_run_writes` does, on an async connection or session."""
    if isinstance(conn, psycopg.AsyncConnection):
        for statement, params in runs:
            if len(params) == 1:
                await conn.execute(statement, params[0])
            else:
                await aexecute_many(conn, statement, [() if p is None else p for p in params])
        return
    for statement, params in runs:
        if len(params) == 1:
            await conn.execute(statement, params[0])
        else:
            await conn.execute(statement, [{} if p is None else p for p in params])


def _versioned_tables(owner: str, tables: Sequence[sa.Table], version: int) -> dict[str, sa.Table]:
    """Copies the declared tables under their version's names (``balances_v2``).

    Explicit constraint and index names get the suffix too: Postgres wants index names
    unique within a schema, and both versions live in the same one.
    """
    if isinstance(tables, sa.Table) or not all(isinstance(t, sa.Table) for t in tables):
        raise ConfigurationError(f"{owner}: tables must be a sequence of sqlalchemy Tables")
    declared = {t.name for t in tables}
    copies: dict[str, sa.Table] = {}
    for table in tables:
        if table.schema is None:
            raise ConfigurationError(
                f"{owner}: table {table.name!r} has no schema: declare it on its MetaData, "
                "e.g. sa.MetaData(schema='read_models')"
            )
        if any(fk.column.table.name in declared for fk in table.foreign_keys):
            raise ConfigurationError(
                f"{owner}: table {table.name!r} has a foreign key to another table of the "
                "projection; versioned tables cannot refer to each other yet"
            )
        if table.name in copies:
            raise ConfigurationError(f"{owner}: two tables named {table.name!r}")
        if len(f"{table.name}_v{version}".encode()) > _MAX_IDENTIFIER:
            raise ConfigurationError(
                f"{owner}: table name {table.name!r} with its version suffix is longer than "
                f"Postgres keeps ({_MAX_IDENTIFIER} bytes)"
            )
        metadata = sa.MetaData(naming_convention=table.metadata.naming_convention)
        copy = table.to_metadata(metadata, name=f"{table.name}_v{version}")
        named: list[sa.Constraint | sa.Index] = [*copy.constraints, *copy.indexes]
        for item in named:
            if isinstance(item.name, str) and item.name:
                item.name = f"{item.name}_v{version}"
        copies[table.name] = copy
    return copies


class _Definition:
    """Holds what projections of both kinds declare, and checks it when a class is defined."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[Sequence[sa.Table]] = ()
    # The stored event types read; by default the classes the handlers are for. Others are
    # skipped in SQL and still move the checkpoint.
    event_types: ClassVar[Sequence[type[Event]] | None] = None
    stream_prefix: ClassVar[str | None] = None
    # What handlers get: a SQLAlchemy Connection, a Session, or the psycopg connection.
    connection: ClassVar[ConnectionKind] = "sqlalchemy"
    # With the psycopg connection, a batch's handlers run in psycopg's pipeline mode: each
    # statement is sent without waiting for its result (a handler that reads a result
    # waits for it then). An error then surfaces when the batch's statements are synced,
    # not at the statement: set False for handlers that catch their own statements' errors.
    pipeline: ClassVar[bool] = True
    batch_size: ClassVar[int] = 500
    shards: ClassVar[int] = 1
    on_failure: ClassVar[FailurePolicy] = "park"
    retries: ClassVar[int] = 3

    __handlers__: ClassVar[dict[type[Event], _Handler]] = {}
    __versioned__: ClassVar[dict[str, sa.Table]] = {}
    _coroutines: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[Event], _Handler] = {}
        for klass in reversed(cls.__mro__):
            handlers.update(_marked(klass))
        cls.__handlers__ = handlers
        if not hasattr(cls, "name"):
            return  # an abstract base of the user's projections
        cls._check_definition()
        cls.__versioned__ = _versioned_tables(cls.__qualname__, cls.tables, cls.version)

    @classmethod
    def _check_definition(cls) -> None:
        where = f"projection {cls.__qualname__}"
        if not isinstance(cls.name, str) or not _NAME.fullmatch(cls.name):
            raise ConfigurationError(
                f"{where}: name {cls.name!r}: use 1-80 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        version = cls.version
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 10**6:
            raise ConfigurationError(f"{where}: version must be an int from 1")
        if not cls.__handlers__ and cls.event_types is None:
            raise ConfigurationError(
                f"{where} handles nothing: mark handlers with @handles, or declare "
                "event_types and override handle_batch"
            )
        methods = [h.method for h in cls.__handlers__.values()] + ["handle_batch"]
        for method in methods:
            if inspect.iscoroutinefunction(getattr(cls, method)) != cls._coroutines:
                wanted = "a coroutine function" if cls._coroutines else "a plain function"
                kind = "an AsyncProjection" if cls._coroutines else "a Projection"
                raise ConfigurationError(f"{where}: {method} must be {wanted} in {kind}")

    @classmethod
    def table(cls, name: str) -> sa.Table:
        """Returns the table ``name`` of this version (``balances`` -> ``balances_v2``)."""
        try:
            return cls.__versioned__[name]
        except KeyError:
            declared = ", ".join(sorted(cls.__versioned__)) or "none"
            raise ConfigurationError(
                f"projection {cls.__qualname__} has no table {name!r} (declared: {declared})"
            ) from None

    @classmethod
    def versioned_tables(cls) -> tuple[sa.Table, ...]:
        """Returns this version's tables, in the order they were declared."""
        return tuple(cls.__versioned__.values())

    @classmethod
    def subscription_name(cls) -> str:
        """Returns the name of this version's subscription, ``projection:<name>:v<version>``."""
        return subscription_name(cls.name, cls.version)

    @classmethod
    def handled_types(cls) -> tuple[type[Event], ...]:
        """Returns the event classes read: ``event_types``, else those with a handler."""
        if cls.event_types is not None:
            return tuple(cls.event_types)
        return tuple(cls.__handlers__)

    def _handler_for(self, event: Event) -> tuple[Callable[..., Any], _Handler] | None:
        handler = self.__handlers__.get(type(event))
        if handler is None:
            return None
        return getattr(self, handler.method), handler


class Projection(_Definition):
    """Keeps read-model tables from events with plain (sync) handlers.

    Override `handle_batch` to write a whole batch at once (one ``INSERT ... ON CONFLICT``
    for many events); by default it calls the ``@handles`` method of each event, in order,
    and runs the writes they return (`Sql`) in bulk.
    """

    def handle_batch(
        self, events: Sequence[RecordedEvent[Event]], conn: Any, *, replay: bool
    ) -> None:
        """Handles one batch of events, in the batch's transaction, in log order.

        Runs the writes handlers return (`Sql`) in event order, each consecutive run of
        one statement in one go (``executemany``): before any handler not declared to return
        writes, and at the end.
        """
        writes = _Writes()
        for event in events:
            found = self._handler_for(event.data)
            if found is None:
                continue
            handler, declared = found
            if writes.runs and not declared.returns:
                _run_writes(conn, writes.take())
            if declared.replay:
                returned = handler(event, conn, replay=replay)
            else:
                returned = handler(event, conn)
            if returned is not None:
                writes.add(returned, handler)
        if writes.runs:
            _run_writes(conn, writes.take())


class AsyncProjection(_Definition):
    """Keeps read-model tables from events with coroutine handlers (an async connection)."""

    _coroutines: ClassVar[bool] = True

    async def handle_batch(
        self, events: Sequence[RecordedEvent[Event]], conn: Any, *, replay: bool
    ) -> None:
        """Handles one batch of events, in the batch's transaction, in log order.

        Runs the writes handlers return (`Sql`) as `Projection.handle_batch` does.
        """
        writes = _Writes()
        for event in events:
            found = self._handler_for(event.data)
            if found is None:
                continue
            handler, declared = found
            if writes.runs and not declared.returns:
                await _run_writes_async(conn, writes.take())
            outcome: Awaitable[Any] = (
                handler(event, conn, replay=replay) if declared.replay else handler(event, conn)
            )
            returned = await outcome
            if returned is not None:
                writes.add(returned, handler)
        if writes.runs:
            await _run_writes_async(conn, writes.take())


AnyProjection = Projection | AsyncProjection


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionGroup:
    """Bundles the projections one daemon runs with the registry that decodes their events.

    Two versions of one projection may be in a group (the live one and the one being
    built); the same version twice is a `DuplicateProjectionError`. ``eventstore
    projections run module:name`` imports such an object, or a function returning one.
    """

    registry: EventRegistry
    projections: tuple[AnyProjection, ...]

    def __post_init__(self) -> None:
        found = tuple(self.projections)
        if not found:
            raise ConfigurationError("a projection group needs at least one projection")
        for item in found:
            if not isinstance(item, Projection | AsyncProjection):
                raise ConfigurationError(f"{item!r} is not a Projection instance")
            if not hasattr(item, "name"):
                raise ConfigurationError(f"{type(item).__qualname__} declares no name")
        _check_unique(found)
        object.__setattr__(self, "projections", found)

    def get(self, name: str, version: int | None = None) -> AnyProjection:
        """Returns the projection of that name (its highest version, unless one is given)."""
        matching = [p for p in self.projections if p.name == name]
        if version is not None:
            matching = [p for p in matching if p.version == version]
        if not matching:
            shown = name if version is None else f"{name} version {version}"
            raise ConfigurationError(f"no projection {shown} in this group")
        return max(matching, key=lambda p: p.version)


def _check_unique(projections: Iterable[AnyProjection]) -> None:
    """Refuses one version twice, and two projections claiming one read-model view."""
    versions: set[tuple[str, int]] = set()
    views: dict[tuple[str | None, str], str] = {}
    for projection in projections:
        key = (projection.name, projection.version)
        if key in versions:
            raise DuplicateProjectionError(*key)
        versions.add(key)
        for table in projection.tables:
            owner = views.setdefault((table.schema, table.name), projection.name)
            if owner != projection.name:
                raise ConfigurationError(
                    f"projections {owner!r} and {projection.name!r} both declare the table "
                    f"{table.schema}.{table.name}"
                )
