"""Metadata that follows the work: correlation and causation ids from a context variable.

Events appended while handling a message carry its ids without any plumbing::

    with message_context(correlation_id=msg.correlation_id, causation_id=msg.id):
        repository.update(account_id, lambda a: a.deposit(10))

The W3C ``traceparent`` of the current OpenTelemetry span is added when
``opentelemetry-api`` is installed (the ``otel`` extra); without it nothing changes.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

from eventstore.events import EventMetadata

__all__ = ["current_metadata", "merged_metadata", "message_context"]

_CONTEXT: Final[contextvars.ContextVar[Mapping[str, Any]]] = contextvars.ContextVar(
    "eventstore_metadata", default=MappingProxyType({})
)


@contextlib.contextmanager
def message_context(**fields: Any) -> Iterator[None]:
    """Sets metadata fields (correlation_id, causation_id, actor, tenant, ...) for a block.

    Nested blocks inherit the outer fields and override the ones they name; ``None``
    values are ignored. The context follows asyncio tasks and ``contextvars.copy_context``.
    """
    given = {k: _text(k, v) for k, v in fields.items() if v is not None}
    merged = {**_CONTEXT.get(), **given}
    token = _CONTEXT.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


_TEXT_FIELDS: Final = frozenset(
    {"correlation_id", "causation_id", "actor", "tenant", "traceparent"}
)


def _text(name: str, value: Any) -> Any:
    """Turns ids given as UUIDs (or ints) into the strings the metadata stores."""
    return str(value) if name in _TEXT_FIELDS and not isinstance(value, str) else value


def current_metadata() -> dict[str, Any]:
    """Returns the fields of the current context, plus the current span's traceparent."""
    fields = dict(_CONTEXT.get())
    if "traceparent" not in fields:
        traceparent = _current_traceparent()
        if traceparent is not None:
            fields["traceparent"] = traceparent
    return fields


def merged_metadata(
    explicit: EventMetadata | Mapping[str, Any] | None,
) -> EventMetadata | Mapping[str, Any] | None:
    """Returns the context's metadata overridden by the fields given explicitly."""
    context = current_metadata()
    if not context:
        return explicit
    if explicit is None:
        return context
    given = (
        explicit.model_dump(exclude_none=True)
        if isinstance(explicit, EventMetadata)
        else {k: v for k, v in explicit.items() if v is not None}
    )
    return {**context, **given}


_propagator: Any = None


def _w3c_propagator() -> Any:
    """Returns OpenTelemetry's W3C trace-context propagator, or False (imported once)."""
    global _propagator
    if _propagator is None:
        try:
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _propagator = False
        else:
            _propagator = TraceContextTextMapPropagator()
    return _propagator


def _current_traceparent() -> str | None:
    propagator = _w3c_propagator()
    if not propagator:
        return None
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    return carrier.get("traceparent")
