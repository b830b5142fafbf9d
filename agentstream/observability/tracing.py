"""OpenTelemetry tracing: one consumer span per stage event, linked across Kafka hops by W3C
``traceparent`` headers, and a ``chat`` span per model call with ``gen_ai.*`` attributes.

The library uses only the OpenTelemetry API: spans are recorded when the application installs an
SDK (``opentelemetry-sdk`` + an exporter); otherwise every call here is a cheap no-op. Attributes
carry ids, topics, offsets, model names and token counts — never prompts, answers or arguments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

_TRACE_HEADERS = ("traceparent", "tracestate")
tracer = trace.get_tracer("agentstream")


def recording() -> bool:
    """Whether an OpenTelemetry SDK is installed (without one every span is a no-op)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


# what a span helper gives when no SDK is installed: no span, and no generator to run per event
_NO_SPAN: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)


def consume_span(
    stage: str, topic: str, partition: int, offset: int, headers: list[tuple[str, bytes]]
) -> AbstractContextManager[Span]:
    """The span of handling one consumed record. With no SDK installed, none is started (about
    16 us a stage event saved): :func:`propagated_headers` passes the record's trace on."""
    if not recording():
        return _NO_SPAN
    return _consume_span(stage, topic, partition, offset, headers)


@contextmanager
def _consume_span(
    stage: str, topic: str, partition: int, offset: int, headers: list[tuple[str, bytes]]
) -> Iterator[Span]:
    carrier = {k: v.decode(errors="replace") for k, v in headers if k in _TRACE_HEADERS}
    with tracer.start_as_current_span(
        f"{stage} process",
        context=propagate.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            "agentstream.stage": stage,
        },
    ) as span:
        yield span


def trace_headers() -> list[tuple[str, bytes]]:
    """W3C trace-context headers for records produced under the current span (may be empty)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [(k, v.encode()) for k, v in carrier.items()]


def propagated_headers(incoming: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The trace headers for what a stage produces from a record with ``incoming`` headers,
    inside its :func:`consume_span`: the span's context; with no SDK installed, the record's
    own trace context, unchanged (as the API's no-op spans would pass it on)."""
    if not recording():
        return [(k, v) for k, v in incoming if k in _TRACE_HEADERS]
    return trace_headers()


def chat_span(model: str, **attributes: Any) -> AbstractContextManager[Span]:
    """The span of one model call (none with no SDK installed: the API's no-op span would only
    hide the outer span, which does not exist either then)."""
    if not recording():
        return _NO_SPAN
    return _chat_span(model, **attributes)


@contextmanager
def _chat_span(model: str, **attributes: Any) -> Iterator[Span]:
    with tracer.start_as_current_span(
        f"chat {model}",
        kind=SpanKind.CLIENT,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": model, **attributes},
    ) as span:
        yield span


@contextmanager
def send_span(topic: str, **attributes: Any) -> Iterator[list[tuple[str, bytes]]]:
    """A producer span around a client's send; yields the trace headers to put on the record
    (the stage that consumes it continues the trace)."""
    with tracer.start_as_current_span(
        f"send {topic}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            **attributes,
        },
    ):
        yield trace_headers()


def receive_span(
    topic: str, partition: int, offset: int, headers: list[tuple[str, bytes]], **attributes: Any
) -> None:
    """A consumer span, ended at once, for a client receiving a record: it joins the trace
    that the record's headers carry (a response joins its request's trace)."""
    carrier = {k: v.decode(errors="replace") for k, v in headers if k in _TRACE_HEADERS}
    span = tracer.start_span(
        f"receive {topic}",
        context=propagate.extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "receive",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
            **attributes,
        },
    )
    span.end()
