"""Tracing: one trace follows a request across the Kafka hops, with gen_ai spans for model calls,
and no span carries the user's message."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
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
from tests.support.workers import worker_env
from tests.test_cli_startup import spawn_worker

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


def _console_spans(text: str) -> list[dict[str, Any]]:
    """The JSON objects ConsoleSpanExporter printed, one after another."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while True:
        start = text.find("{", index)
        if start < 0:
            return spans
        span, index = decoder.raw_decode(text, start)
        spans.append(span)


async def test_worker_exports_spans_from_the_otel_exporter_variable(
    settings_factory: Any, tmp_path: Path
) -> None:
    """``AGENTSTREAM_OTEL_EXPORTER=console``: the worker process sets up the SDK by itself; with
    the client's spans (in-memory here) one trace spans client, validation, generation, tools,
    generation and the client receiving the response."""
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    env = worker_env(settings, {"AGENTSTREAM_OTEL_EXPORTER": "console"})
    proc = spawn_worker(env, tmp_path)
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 60)
        assert "worker running" in line, line
        EXPORTER.clear()
        async with AgentClient(settings) as client:
            answer = await client.ask("add 2 and 3", session_id="otel", user_id="u", tenant_id="t")
        assert answer.content == "The answer is 5."
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(proc.communicate, None, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    client_spans = {s.name: s for s in EXPORTER.get_finished_spans()}
    sent = client_spans[f"send {settings.topics.requests}"]
    received = client_spans[f"receive {settings.topics.responses}"]
    trace_id = f"0x{sent.context.trace_id:032x}"
    assert f"0x{received.context.trace_id:032x}" == trace_id
    worker_spans = [s for s in _console_spans(out) if s["name"].endswith(" process")]
    assert {s["context"]["trace_id"] for s in worker_spans} == {trace_id}
    ordered = sorted(worker_spans, key=lambda s: s["start_time"])
    assert [s["name"] for s in ordered] == [
        "validation process",
        "generation process",
        "tools process",
        "generation process",
    ]
    assert all(s["resource"]["attributes"]["service.name"] == "agentstream-worker" for s in ordered)
    assert "add 2 and 3" not in out
