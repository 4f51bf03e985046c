"""Whatever an append accepts reads back the same from Postgres, or it is refused first.

jsonb rewrites what it stores (numbers without exponents, no negative zero, its own key
order): the property is checked against the real server, with arbitrary JSON-like values
in an untyped payload field, in a `dict[str, Any]` field and in metadata.
"""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

from eventstore import Event, EventRegistry, InvalidEventError, PostgresEventStore
from eventstore._jsonb import same


class Untyped(Event):
    event_type: ClassVar[str] = "test.Untyped"
    value: Any = None
    mapping: dict[str, Any] = Field(default_factory=dict)


@pytest.fixture
def eventstore_registry() -> EventRegistry:
    return EventRegistry([Untyped])


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats()
    | st.text(max_size=8)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)
_streams = itertools.count()

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(value=json_values, mapping=st.dictionaries(st.text(max_size=4), json_values, max_size=3))
def test_an_untyped_payload_reads_back_the_same_or_is_refused_before_any_write(
    postgres_event_store: PostgresEventStore, value: Any, mapping: dict[str, Any]
) -> None:
    stream = f"p-{next(_streams)}"
    event = Untyped(value=value, mapping=mapping)
    try:
        postgres_event_store.append(stream, event)
    except InvalidEventError:
        assert not postgres_event_store.stream_info(stream).exists
        return
    (stored,) = postgres_event_store.read_stream(stream)
    assert same(stored.data.__dict__, event.__dict__), (stored.data, event)


@SETTINGS
@given(extra=st.dictionaries(st.text(min_size=1, max_size=4), json_values, max_size=3))
def test_metadata_reads_back_the_same_or_is_refused_before_any_write(
    postgres_event_store: PostgresEventStore, extra: dict[str, Any]
) -> None:
    stream = f"m-{next(_streams)}"
    reserved = {"correlation_id", "causation_id", "actor", "tenant", "traceparent"}
    metadata = {f"x_{key}": value for key, value in extra.items() if key not in reserved}
    try:
        postgres_event_store.append(stream, Untyped(), metadata=metadata)
    except InvalidEventError:
        assert not postgres_event_store.stream_info(stream).exists
        return
    (stored,) = postgres_event_store.read_stream(stream)
    kept = {k: v for k, v in stored.metadata.model_dump().items() if v is not None}
    sent = {k: v for k, v in metadata.items() if v is not None}
    assert same(kept, sent), (kept, sent)


@pytest.mark.parametrize(
    "value", [5.983134381923235e16, 1e16, -0.0], ids=["big-float", "1e16", "negative-zero"]
)
def test_the_floats_jsonb_would_change_are_refused(
    postgres_event_store: PostgresEventStore, value: float
) -> None:
    with pytest.raises(InvalidEventError, match="read back"):
        postgres_event_store.append("s", Untyped(value=value))
    with pytest.raises(InvalidEventError, match="metadata"):
        postgres_event_store.append("s", Untyped(), metadata={"x": value})
    assert not postgres_event_store.stream_info("s").exists


def test_nan_in_metadata_is_refused_not_stored_as_null(
    postgres_event_store: PostgresEventStore,
) -> None:
    with pytest.raises(InvalidEventError, match="metadata"):
        postgres_event_store.append("s", Untyped(), metadata={"x": float("nan")})
