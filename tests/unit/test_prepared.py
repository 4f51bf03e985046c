"""The append's positional form for libpq's prepared calls (`eventstore.postgres.prepared`)."""

from __future__ import annotations

import uuid

import pytest

from eventstore.postgres import sql
from eventstore.postgres.prepared import positional


def test_placeholders_become_numbered_once_per_name_with_their_format() -> None:
    statement = positional(
        b"SELECT %(stream_id)s, %(first_id)b::uuid, %(count)s, %(stream_id)s || 'x'"
    )
    assert statement.query == b"SELECT $1, $2::uuid, $3, $1 || 'x'"
    assert statement.params == ("stream_id", "first_id", "count")
    assert statement.formats == [0, 1, 0]
    assert statement.types == [25, 2950, 20]
    # psycopg 3.2's C PGconn refuses tuples for parameter types and formats.
    assert type(statement.types) is list and type(statement.formats) is list


def test_values_are_encoded_as_the_prepared_types_take_them() -> None:
    statement = positional(b"SELECT %(stream_id)s, %(first_id)b, %(count)s, %(expected)s")
    event_id = uuid.uuid4()
    values = statement.values(
        {"stream_id": "konto-ä", "first_id": event_id, "count": 3, "expected": None}, "utf-8"
    )
    assert values == ["konto-ä".encode(), event_id.bytes, b"3", None]
    with pytest.raises(TypeError, match="count"):
        statement.values(
            {"stream_id": "s", "first_id": event_id, "count": 1.5, "expected": 1}, "utf-8"
        )


def test_every_append_statement_of_the_own_connection_converts() -> None:
    rendered = sql.render("eventstore").append_own
    converted = rendered.map(positional)
    names = {s.name for s in (converted.one_no_stream, converted.exact, converted.any)}
    assert len(names) == 3  # named after their text
    for statement in (converted.one_no_stream, converted.exact, converted.any):
        assert b"%(" not in statement.query
        assert len(statement.types) == len(statement.params) == len(statement.formats)
