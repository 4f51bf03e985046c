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
    merged = {**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _CONTEXT.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


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


_otel_trace: Any = None


def _trace_api() -> Any:
    """Returns ``opentelemetry.trace`` or False, importing once (a failed import is slow)."""
    global _otel_trace
    if _otel_trace is None:
        try:
            from opentelemetry import trace  # type: ignore[attr-defined,unused-ignore]
        except ImportError:
            _otel_trace = False
        else:
            _otel_trace = trace
    return _otel_trace


def _current_traceparent() -> str | None:
    trace = _trace_api()
    if not trace:
        return None
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )
