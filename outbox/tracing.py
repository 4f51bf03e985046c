"""OpenTelemetry spans of the relay and the consumer helpers (the ``otel`` extra).

With ``opentelemetry-api`` installed and a tracer provider configured (the SDK's, or any
other than the API's default no-op one):

- the relay opens a ``publish <type>`` span (kind ``PRODUCER``) per message, the child of
  (and linked to) the span that appended the event (the ``traceparent`` of the event's
  metadata; a new trace when the event has none). The span lasts until the broker
  confirmed the message, records a failure as an error, and the message goes out
  carrying the publish span's ``traceparent``, so that the consumer's span follows it in
  the same trace;
- the consumer helpers (`outbox.consumer.apply_once` and each broker's) open a
  ``process <type>`` span (kind ``CONSUMER``), the child of the message's
  ``traceparent``, around the inbox record, the handler and the commit. It is the current
  span while the handler runs: events the handler appends carry its ``traceparent``.

Without ``opentelemetry-api``, or with no tracer provider configured, nothing changes: no
span is made and a message carries the appending request's ``traceparent``, as stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from outbox.message import Message

__all__ = ["TRACER_NAME", "processing", "publishing"]

TRACER_NAME: Final = "outbox"


@dataclasses.dataclass(frozen=True, slots=True)
class _Api:
    """The pieces of ``opentelemetry-api`` this module uses, imported once."""

    trace: Any
    propagator: Any


# None: not looked up yet; False: opentelemetry-api is not installed.
_api: _Api | bool | None = None


def _opentelemetry() -> _Api | None:
    global _api
    if _api is None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError:
            _api = False
        else:
            _api = _Api(trace, TraceContextTextMapPropagator())
    return _api if isinstance(_api, _Api) else None


def _tracer(api: _Api) -> Any | None:
    """Returns the outbox's tracer, or None while no tracer provider is configured."""
    provider = api.trace.get_tracer_provider()
    if isinstance(provider, api.trace.ProxyTracerProvider | api.trace.NoOpTracerProvider):
        return None
    return provider.get_tracer(TRACER_NAME)


def _parent(api: _Api, traceparent: str | None) -> Any:
    """Returns the context a ``traceparent`` names (an empty one: a new trace)."""
    carrier = {} if traceparent is None else {"traceparent": traceparent}
    return api.propagator.extract(carrier)


def _links(api: _Api, parent: Any) -> list[Any]:
    """Returns a link to the appending request's span, if the event named one."""
    context = api.trace.get_current_span(parent).get_span_context()
    return [api.trace.Link(context)] if context.is_valid else []


def _traceparent(api: _Api, span: Any) -> str | None:
    carrier: dict[str, str] = {}
    api.propagator.inject(carrier, context=api.trace.set_span_in_context(span))
    return carrier.get("traceparent")


def _attributes(message: Message, system: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.message.id": message.id,
        "cloudevents.event_id": message.id,
        "cloudevents.event_source": message.source,
        "cloudevents.event_type": message.type,
        "eventstore.stream_id": message.stream_id,
        "eventstore.stream_version": message.stream_version,
        "eventstore.global_position": message.global_position,
    }


def _fail(api: _Api, span: Any, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(api.trace.Status(api.trace.StatusCode.ERROR, f"{type(error).__name__}"))


@contextlib.contextmanager
def publishing(
    messages: Sequence[Message], *, relay: str, system: str
) -> Iterator[Sequence[Message]]:
    """Opens a publish span per message; yields the messages to send (with their spans'
    ``traceparent``). The spans end when the block does, as errors if it raises."""
    api = _opentelemetry()
    tracer = None if api is None else _tracer(api)
    if api is None or tracer is None:
        yield messages
        return
    spans, sent = [], []
    for message in messages:
        parent = _parent(api, message.traceparent)
        span = tracer.start_span(
            f"publish {message.type}",
            context=parent,
            kind=api.trace.SpanKind.PRODUCER,
            attributes={**_attributes(message, system, "publish"), "outbox.relay": relay},
            links=_links(api, parent),
        )
        spans.append(span)
        traceparent = _traceparent(api, span)
        if traceparent is not None:
            message = dataclasses.replace(message, traceparent=traceparent)
        sent.append(message)
    try:
        yield sent
    except BaseException as error:
        for span in spans:
            _fail(api, span, error)
        raise
    finally:
        for span in spans:
            span.end()


@contextlib.contextmanager
def processing(message: Message, *, consumer: str, system: str) -> Iterator[Callable[[bool], None]]:
    """Opens the current ``process`` span of a consumed message, the child of its
    ``traceparent``; yields a function to record whether the message was new."""
    api = _opentelemetry()
    tracer = None if api is None else _tracer(api)
    if api is None or tracer is None:
        yield _ignore
        return
    attributes = _attributes(message, system, "process")
    attributes["messaging.consumer.group.name"] = consumer
    with tracer.start_as_current_span(
        f"process {message.type}",
        context=_parent(api, message.traceparent),
        kind=api.trace.SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:

        def record(fresh: bool) -> None:
            span.set_attribute("outbox.duplicate", not fresh)

        yield record


def _ignore(fresh: bool) -> None:
    pass
