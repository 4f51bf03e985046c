# Generated from pipelined_async.py by tools/async_to_sync.py: do not edit.
# Change the async source and run `make generate`.
"""One statement executed for many parameter sets in one pipeline, on a psycopg connection.

psycopg's ``executemany`` in pipeline mode polls the socket and processes results after
every statement it sends: about 10 µs of client CPU per statement here, more than the
server spends running a one-row upsert. `execute_many` parses the statement once (the
unnamed prepared statement), queues a Bind/Execute per parameter set into libpq's output
buffer, sends them with one Sync and then reads every result: the same executions, in the
same order, in the same transaction, for about a third of the client CPU (measured in
``docs/discussions/projections.md``, "Running returned writes").

Errors behave as with ``executemany``: the first failing execution's error is raised (the
executions after it are skipped by the server, and the transaction is aborted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import psycopg
from psycopg import errors, pq
from psycopg.adapt import Transformer
from psycopg.generators import fetch, send

try:  # psycopg's own query converter (placeholders, dumping): private, so guarded
    from psycopg._queries import PostgresQuery
except ImportError:  # pragma: no cover - a psycopg without it falls back to executemany
    PostgresQuery = None  # type: ignore[assignment,misc]

__all__ = ["execute_many"]

_SYNC: Any = pq.ExecStatus.PIPELINE_SYNC
_FAILED: Any = (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED)


def execute_many(conn: psycopg.Connection[Any], statement: Any, params_seq: Sequence[Any]) -> None:
    """Executes ``statement`` once per parameter set, in order, in one pipeline.

    ``statement`` is what psycopg accepts (str, bytes or a `psycopg.sql.Composable` with
    ``%s`` or ``%(name)s`` placeholders); each parameter set a sequence or a mapping. Runs
    in the connection's transaction (opening it first, as psycopg does, unless the
    connection is in autocommit mode; in autocommit mode outside a transaction, the run is
    one implicit transaction, all or nothing). Inside an open psycopg pipeline it first
    syncs that pipeline.
    """
    if PostgresQuery is None or not params_seq:
        with conn.cursor() as cur:
            cur.executemany(statement, params_seq)
        return
    # Every parameter set is adapted before anything is sent: a value psycopg cannot
    # adapt raises here, with nothing executed.
    commands = _adapted(conn, statement, params_seq)
    pgconn = conn.pgconn
    if not conn.autocommit and pgconn.transaction_status == pq.TransactionStatus.IDLE:
        # psycopg opens the connection's transaction on its first statement: let it, with
        # the first execution, so that the rest run in that transaction too.
        conn.execute(statement, params_seq[0])
        commands = commands[1:]
        if not commands:
            return
    if pgconn.pipeline_status == pq.PipelineStatus.OFF:
        with conn.lock:
            pgconn.enter_pipeline_mode()
            try:
                failed = _pipelined(conn, commands)
            except BaseException:
                # Cut off mid-way (a lost connection, a cancellation): results left unread
                # keep the connection in pipeline mode, unusable; close it (a pool then
                # discards it).
                pgconn.finish()
                raise
            pgconn.exit_pipeline_mode()
    else:
        with conn.pipeline() as pipeline:
            pipeline.sync()  # what psycopg queued before runs first, in order
            failed = _pipelined(conn, commands)
    if failed is not None:
        if failed.status == pq.ExecStatus.PIPELINE_ABORTED:  # pragma: no cover - defensive
            raise errors.PipelineAborted("pipeline aborted")
        raise errors.error_from_result(failed, encoding=conn.info.encoding)


_Command: TypeAlias = tuple[bytes, Any, Any, Any]  # query, types, values, formats


def _adapted(
    conn: psycopg.Connection[Any], statement: Any, params_seq: Sequence[Any]
) -> list[_Command]:
    """Converts the statement and adapts every parameter set, as psycopg does."""
    query = PostgresQuery(Transformer(conn))
    commands: list[_Command] = []
    for n, params in enumerate(params_seq):
        if n == 0:
            query.convert(statement, params)
        else:
            query.dump(params)
        commands.append((query.query, query.types, query.params, query.formats))
    return commands


def _pipelined(conn: psycopg.Connection[Any], commands: list[_Command]) -> pq.abc.PGresult | None:
    """Sends every execution and a Sync, reads every result; returns the first failure."""
    pgconn = conn.pgconn
    parsed: Any = None
    for text, types, values, formats in commands:
        if types != parsed:
            # psycopg picks a parameter's type by its value (an int may go as int2, int4
            # or int8, in binary): parse again whenever the types change.
            parsed = types
            pgconn.send_prepare(b"", text, param_types=types)
        pgconn.send_query_prepared(b"", values, param_formats=formats)
    pgconn.pipeline_sync()
    conn.wait(send(pgconn))
    failed: pq.abc.PGresult | None = None
    while True:
        result = conn.wait(fetch(pgconn))
        if result is None:
            continue  # the end of one statement's results
        if result.status == _SYNC:
            return failed
        if failed is None and result.status in _FAILED:
            failed = result
