"""The inspection subcommands: ``eventstore read STREAM`` and ``eventstore streams``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from eventstore.cli._exit import EXIT_NOT_FOUND, EXIT_OK
from eventstore.cli.database import add_database_options, resolve_url
from eventstore.errors import ConfigurationError

__all__ = ["register"]


def cmd_read(args: argparse.Namespace) -> int:
    from eventstore.postgres.connections import probe
    from eventstore.postgres.store import PostgresEventStore
    from eventstore.registry import EventRegistry

    if args.limit is not None and args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    url = resolve_url(args.url)
    probe(url)  # a one-shot command: name a refused port at once, not after the pool's wait
    found = 0
    with PostgresEventStore(url, registry=EventRegistry(), schema=args.schema, max_size=1) as store:
        for event in store.read_stream_raw(
            args.stream,
            direction="backward" if args.backward else "forward",
            from_version=args.from_version,
            limit=args.limit,
        ):
            found += 1
            print(json.dumps(_event_dict(event), ensure_ascii=False, default=str))
        if not found and not store.stream_info(args.stream).exists:
            print(f"no stream {args.stream!r} in schema {args.schema!r}", file=sys.stderr)
            return EXIT_NOT_FOUND
    return EXIT_OK


def _event_dict(event: Any) -> dict[str, Any]:
    return {
        "stream_id": event.stream_id,
        "version": event.version,
        "global_position": event.global_position,
        "event_type": event.event_type,
        "schema_version": event.schema_version,
        "event_id": str(event.event_id),
        "recorded_at": event.recorded_at.isoformat(),
        "data": event.data,
        "metadata": event.metadata,
    }


def cmd_streams(args: argparse.Namespace) -> int:
    from eventstore.postgres.inspection import list_streams

    if args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    if args.prefix and args.category:
        raise ConfigurationError("give --category or --prefix, not both")
    prefix = f"{args.category}-" if args.category else args.prefix or ""
    rows = list_streams(
        resolve_url(args.url), prefix=prefix, schema=args.schema, limit=args.limit, after=args.after
    )
    for row in rows:
        print(f"{row.stream_id}\t{row.version}\t{row.updated_at.isoformat()}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``read`` and ``streams`` to the ``eventstore`` parser."""
    read = sub.add_parser(
        "read",
        help="print a stream's events, one JSON object a line",
        description="Prints a stream's events as stored (no event classes needed), one JSON "
        "object a line: stream_id, version, global_position, event_type, schema_version, "
        "event_id, recorded_at, data, metadata. Exit code 5 when the stream does not exist.",
    )
    read.add_argument("stream", help="the stream id, e.g. account-42")
    add_database_options(read)
    read.add_argument("--from-version", type=int, help="start at this version")
    read.add_argument("--limit", type=int, help="print at most this many events")
    read.add_argument("--backward", action="store_true", help="newest first")
    read.set_defaults(handler=cmd_read)
    streams = sub.add_parser(
        "streams",
        help="list streams by category or id prefix",
        description="Lists streams in id order, tab-separated: stream id, version (its "
        "number of events), last write. Served by the streams table's primary key when the "
        "database collation orders by code point (C, C.UTF-8, POSIX).",
    )
    add_database_options(streams)
    streams.add_argument("--category", help="streams of this category: ids starting 'CATEGORY-'")
    streams.add_argument("--prefix", help="streams whose id starts with PREFIX")
    streams.add_argument("--limit", type=int, default=100, help="list at most this many")
    streams.add_argument("--after", help="continue after this stream id (paging)")
    streams.set_defaults(handler=cmd_streams)
