"""OpenTelemetry without code: ``AGENTSTREAM_OTEL_EXPORTER=otlp|console`` installs the SDK.

The library itself only uses the OpenTelemetry API (observability/tracing.py); a process that
wants spans recorded installs a tracer provider. ``agentstream worker`` does so here when
``otel_exporter`` is set:

- ``otlp``: spans batched to an OTLP/HTTP (protobuf) endpoint; the standard variables apply
  (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``..._HEADERS``,
  ``..._TIMEOUT``, ``OTEL_BSP_*``);
- ``console``: each span printed as JSON to stdout as it ends (for a first look, and tests).

``OTEL_SERVICE_NAME`` (default ``agentstream-worker``), ``OTEL_RESOURCE_ATTRIBUTES`` and
``OTEL_TRACES_SAMPLER[_ARG]`` are read by the SDK. The SDK and the OTLP exporter are the
``otel`` extra (``pip install 'agentstream[otel]'``): the OTLP exporter brings protobuf and
requests, which a worker without tracing does not need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentstream.config import Settings
from agentstream.exceptions import ConfigError

DEFAULT_SERVICE_NAME = "agentstream-worker"
_EXTRA_HINT = "install the otel extra: pip install 'agentstream[otel]'"


def _nothing() -> None:
    return None


def configure_tracing(settings: Settings) -> Callable[[], None]:
    """Install a tracer provider for ``settings.otel_exporter``; returns its shutdown (which
    flushes spans not yet exported). With ``none`` nothing is installed."""
    if settings.otel_exporter == "none":
        return _nothing
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as exc:
        raise ConfigError(
            f"AGENTSTREAM_OTEL_EXPORTER={settings.otel_exporter} needs opentelemetry-sdk; "
            + _EXTRA_HINT
        ) from exc
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(_processor(settings.otel_exporter))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def _processor(kind: str) -> Any:
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    if kind == "console":
        return SimpleSpanProcessor(ConsoleSpanExporter())
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "AGENTSTREAM_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http; "
            + _EXTRA_HINT
        ) from exc
    return BatchSpanProcessor(OTLPSpanExporter())
