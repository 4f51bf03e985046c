"""Stored data another producer wrote wrong reaches readers as typed errors, never raw ones."""

from __future__ import annotations

import uuid
from typing import ClassVar

import psycopg
import pytest

from eventstore import (
    ConfigurationError,
    Event,
    EventRegistry,
    InvalidEventError,
    PostgresEventStore,
    RawRecordedEvent,
)
from tests.support import Deposited

DEP = Deposited(amount=1, currency="EUR")


def test_stored_metadata_that_does_not_validate_is_a_typed_error_and_raw_reads_still_work(
    postgres_event_store: PostgresEventStore, eventstore_database_url: str
) -> None:
    postgres_event_store.append("s", DEP)
    with psycopg.connect(eventstore_database_url) as conn:  # another producer, by hand
        conn.execute("SET LOCAL eventstore.allow_rewrite = 'on'")
        conn.execute("UPDATE eventstore.events SET metadata = '{\"correlation_id\": 42}'")
    with pytest.raises(InvalidEventError, match="metadata") as caught:
        list(postgres_event_store.read_stream("s"))
    assert isinstance(caught.value.event, RawRecordedEvent)
    (raw,) = postgres_event_store.read_stream_raw("s")
    assert raw.metadata == {"correlation_id": 42}


def test_a_schema_version_changed_to_a_non_int_after_registration_is_refused_at_encode() -> None:
    class Tampered(Event):
        event_type: ClassVar[str] = "test.Tampered"

    registry = EventRegistry([Tampered])
    Tampered.schema_version = '1},{"i":"x"'  # type: ignore[assignment]
    try:
        with pytest.raises(ConfigurationError, match="schema_version"):
            registry.encode(Tampered(), "{}", uuid.uuid4())
    finally:
        Tampered.schema_version = 1
