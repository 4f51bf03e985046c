"""Tracing with OpenTelemetry (the SDK's in-memory exporter): a publish span per message, the
child of the appending request's span, and a consumer span that continues the trace; and
without opentelemetry installed (its import failing), nothing changes."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import eventstore.context
import outbox.tracing
from eventstore import AsyncPostgresEventStore, EventMetadata, PostgresEventStore
from outbox import Message, RecordingPublisher, Relay, RelayGroup
from outbox.consumer import apply_once
from tests.outbox.support import Deposited, Withdrawn, make_registry, running, until

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="session")
def exporter_of_the_session() -> InMemorySpanExporter:
    """An in-memory exporter on the process's tracer provider (set once per process)."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def exporter(exporter_of_the_session: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    exporter_of_the_session.clear()
    yield exporter_of_the_session
    exporter_of_the_session.clear()


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def relay_everything(url: str, publisher: RecordingPublisher) -> None:
    group = RelayGroup(make_registry(), (Relay("traced", publisher, source="/bank"),))
    async with running(url, group) as subscriptions:
        await subscriptions.wait_until_caught_up("relay:traced", timeout=30)


async def test_each_message_is_published_in_a_span_of_the_request_and_consumed_in_its_trace(
    exporter: InMemorySpanExporter, eventstore_database_url: str
) -> None:
    url = eventstore_database_url
    registry = make_registry()
    tracer = trace.get_tracer("tests")
    with PostgresEventStore(url, registry=registry) as store:
        with tracer.start_as_current_span("POST /accounts/1/deposits") as request:
            store.append("account-1", [Deposited(amount=1), Withdrawn(amount=1)])
        store.append("account-2", Deposited(amount=2))  # no span: a trace of its own
    publisher = RecordingPublisher()
    publisher.unavailable = "down for the first call"

    async def recover() -> None:
        await until(lambda: publisher.calls >= 1, 20, "a first, failing call")
        publisher.unavailable = None

    group = RelayGroup(registry, (Relay("traced", publisher, source="/bank"),))
    async with running(url, group) as subscriptions:
        await recover()
        await subscriptions.wait_until_caught_up("relay:traced", timeout=30)

    spans = exporter.get_finished_spans()
    publishes = [s for s in spans if s.name.startswith("publish ")]
    failed = [s for s in publishes if s.status.status_code == StatusCode.ERROR]
    assert failed, "the failing call's spans are errors"
    assert all(s.events and s.events[0].name == "exception" for s in failed)
    confirmed = {
        s.attributes["messaging.message.id"]: s  # type: ignore[index]
        for s in publishes
        if s.status.status_code != StatusCode.ERROR
    }
    assert len(confirmed) == 3
    request_context = request.get_span_context()
    for message in publisher.published:
        span = confirmed[message.id]
        assert span.kind == SpanKind.PRODUCER
        assert span.name == f"publish {message.type}"
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "RecordingPublisher"
        assert span.attributes["outbox.relay"] == "traced"
        assert span.attributes["eventstore.stream_id"] == message.stream_id
        # The message carries its publish span's context, for the consumer to continue.
        assert message.traceparent == traceparent_of(span)
        if message.stream_id == "account-1":
            assert span.parent is not None
            assert span.parent.span_id == request_context.span_id
            assert span.context.trace_id == request_context.trace_id
            linked = [(link.context.trace_id, link.context.span_id) for link in span.links]
            assert linked == [(request_context.trace_id, request_context.span_id)]
        else:
            assert span.parent is None and not span.links

    first = next(m for m in publisher.published if m.stream_id == "account-1")
    exporter.clear()
    appended: list[Any] = []

    async def handle(message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
        # What the consumer appends carries the consumer span's traceparent.
        async with AsyncPostgresEventStore(url, registry=registry) as store:
            appended.append(await store.append("audit-1", Deposited(amount=9), conn=conn))

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await apply_once(first, conn, "audit", handle)
        assert not await apply_once(first, conn, "audit", handle)
    new, duplicate = exporter.get_finished_spans()
    publish_span = confirmed[first.id]
    for span, is_duplicate in ((new, False), (duplicate, True)):
        assert span.kind == SpanKind.CONSUMER
        assert span.name == "process bank.Deposited"
        assert span.parent is not None and span.parent.span_id == publish_span.context.span_id
        assert span.context.trace_id == request_context.trace_id
        assert span.attributes is not None
        assert span.attributes["messaging.consumer.group.name"] == "audit"
        assert span.attributes["outbox.duplicate"] is is_duplicate
    with PostgresEventStore(url, registry=registry) as store:
        (audit,) = store.read_stream("audit-1")
    assert audit.metadata.traceparent == traceparent_of(new)


async def test_a_failing_handler_ends_the_consumer_span_as_an_error(
    exporter: InMemorySpanExporter, eventstore_database_url: str
) -> None:
    publisher = RecordingPublisher()
    with PostgresEventStore(eventstore_database_url, registry=make_registry()) as store:
        store.append("account-1", Deposited(amount=1))
    await relay_everything(eventstore_database_url, publisher)

    async def handle(message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
        raise ZeroDivisionError

    async with await psycopg.AsyncConnection.connect(
        eventstore_database_url, autocommit=True
    ) as conn:
        with pytest.raises(ZeroDivisionError):
            await apply_once(publisher.published[0], conn, "audit", handle)
    (span,) = [s for s in exporter.get_finished_spans() if s.name.startswith("process ")]
    assert span.status.status_code == StatusCode.ERROR


async def test_without_opentelemetry_installed_nothing_changes(
    exporter: InMemorySpanExporter,
    eventstore_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every `import opentelemetry...` fails from here on, as if it were not installed.
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setattr(outbox.tracing, "_api", None)
    monkeypatch.setattr(eventstore.context, "_propagator", None)
    url = eventstore_database_url
    tracer = trace.get_tracer("tests")  # the provider is still set: only the import fails
    with PostgresEventStore(url, registry=make_registry()) as store:
        with tracer.start_as_current_span("request"):
            store.append("account-1", Deposited(amount=1))
        store.append(
            "account-2", Deposited(amount=2), metadata=EventMetadata(traceparent=TRACEPARENT)
        )
    publisher = RecordingPublisher()
    await relay_everything(url, publisher)
    applied: list[Message] = []

    async def handle(message: Message, conn: psycopg.AsyncConnection[Any]) -> None:
        applied.append(message)

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for message in publisher.published:
            assert await apply_once(message, conn, "audit", handle)
    assert outbox.tracing._api is False  # the import was tried, and failed
    by_stream = {m.stream_id: m.traceparent for m in publisher.published}
    assert by_stream == {"account-1": None, "account-2": TRACEPARENT}  # as stored
    assert len(applied) == 2
    assert [s.name for s in exporter.get_finished_spans()] == ["request"]
