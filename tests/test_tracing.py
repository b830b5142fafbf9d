"""Tracing: one trace follows a request across the Kafka hops, with gen_ai spans for model calls,
and no span carries the user's message."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA

pytestmark = pytest.mark.integration

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def tracer_provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)


async def test_one_trace_across_stages_with_gen_ai_spans(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    EXPORTER.clear()
    async with PipelineWorker(settings), AgentClient(settings) as client:
        answer = await client.ask("add 2 and 3", session_id="tr", user_id="u", tenant_id="t")
    assert answer.content == "The answer is 5."
    spans = EXPORTER.get_finished_spans()
    stage_spans = [s for s in spans if s.name.endswith(" process")]
    assert sorted(s.name for s in stage_spans) == [
        "generation process",
        "generation process",
        "tools process",
        "validation process",
    ]
    assert len({s.context.trace_id for s in stage_spans}) == 1  # linked through headers
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 2
    for chat in chats:
        attributes = dict(chat.attributes or {})
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.usage.input_tokens"] > 0
        assert chat.context.trace_id == stage_spans[0].context.trace_id
    for span in spans:
        assert "add 2 and 3" not in str(dict(span.attributes or {}))
