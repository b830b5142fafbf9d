"""Token streaming and feedback end to end, on the real broker and real Redis (no mocks): the
local model streaming word by word, an OpenAI-compatible server (a local HTTP server speaking
SSE) whose first stream breaks midway, and feedback reaching a worker's /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentstream.client import AgentClient, AgentResponse
from agentstream.client_stream import StreamedText
from agentstream.config import Settings
from agentstream.embedded.process import free_port
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import MetricsEvent, StreamDelta
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.llm_servers import FakeLLMServer, Reply, openai_stream
from tests.support.wait import wait_until
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.integration

PIECES = ["Streams ", "are ", "rivers ", "of ", "records", "."]
IDS = {"user_id": "u1", "tenant_id": "t1"}


async def _collect(
    client: AgentClient, message: str, session_id: str
) -> tuple[list[tuple[float, StreamDelta]], AgentResponse, float]:
    """The deltas with their arrival times, the response, and when the response arrived."""
    arrived: dict[str, float] = {}
    subscribed = asyncio.Event()

    async def watch() -> None:
        responses = client.responses()
        waiting = asyncio.ensure_future(responses.__anext__())
        subscribed.set()
        await waiting
        arrived["response"] = time.monotonic()
        await responses.aclose()

    watcher = asyncio.create_task(watch())
    await subscribed.wait()
    deltas: list[tuple[float, StreamDelta]] = []
    response: AgentResponse | None = None
    async for item in client.stream(message, session_id=session_id, timeout=30, **IDS):
        if isinstance(item, AgentResponse):
            response = item
        else:
            deltas.append((time.monotonic(), item))
    await asyncio.wait_for(watcher, 10)
    assert response is not None
    return deltas, response, arrived["response"]


def _assemble(deltas: list[tuple[float, StreamDelta]]) -> StreamedText:
    text = StreamedText()
    for _, delta in deltas:
        text.add(delta)
    return text


async def test_local_model_streams_before_the_response_and_adds_up(settings_factory: Any) -> None:
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA,
        llm={"local_latency_s": 0.6},
        streaming={"flush_interval_ms": 20},
    )
    await ensure_topics(settings)
    async with PipelineWorker(settings) as _, AgentClient(settings) as client:
        deltas, response, response_at = await _collect(client, "add 2 and 3", "s-local")
        # a request that does not ask to stream writes nothing to the stream topic
        plain = await client.ask("add 4 and 5", session_id="s-plain", **IDS)
    assert response.ok, response
    assert deltas, "no delta arrived"
    assert deltas[0][0] < response_at, "the first delta came after the response"
    text = _assemble(deltas)
    assert text.final
    assert text.turn == 1  # turn 0 asked for the calculator, turn 1 answered
    assert text.text == response.content == "The answer is 5."
    turn0 = [d for _, d in deltas if d.turn == 0]
    assert [(d.text, d.final) for d in turn0] == [("", True)]  # a tool turn: no text
    assert plain.ok
    async with TopicReader(settings, settings.topics.stream) as stream:
        await stream.wait_for(lambda: len(stream.records) >= len(deltas), what="the deltas")
        codec = AvroCodec()
        streamed = {codec.decode_record(StreamDelta, r.value).request_id for r in stream.records}
    assert streamed == {response.request_id}


@pytest.fixture
async def llm_server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


async def test_a_stream_broken_midway_is_retried_under_a_new_attempt(
    settings_factory: Any, llm_server: FakeLLMServer
) -> None:
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA,
        llm={
            "model": "fake",
            "providers": {
                "fake": {"kind": "openai", "model": "m", "base_url": llm_server.base_url}
            },
            "retry": {"base_delay_s": 0.0, "max_delay_s": 0.0},
        },
        streaming={"flush_interval_ms": 1, "flush_tokens": 1},
    )
    await ensure_topics(settings)
    llm_server.push(
        Reply(events=openai_stream(PIECES), event_gap_s=0.05, cut_after=4),
        Reply(events=openai_stream(PIECES), event_gap_s=0.05),
    )
    async with PipelineWorker(settings) as _, AgentClient(settings) as client:
        deltas, response, response_at = await _collect(client, "tell me about streams", "s-ai")
    assert response.ok, response
    assert deltas[0][0] < response_at
    attempts = sorted({d.attempt for _, d in deltas})
    assert attempts == [1, 2]
    first = [d for _, d in deltas if d.attempt == 1]
    assert "".join(d.text for d in first) == "".join(PIECES[:3])
    assert not any(d.final for d in first)
    text = _assemble(deltas)
    assert text.final
    assert text.attempt == 2
    assert text.text == response.content == "".join(PIECES)
    assert len(llm_server.arrivals) == 2


async def test_feedback_reaches_metrics_and_the_metrics_stream(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    port = free_port()
    proc = start_worker(settings, {"AGENTSTREAM_METRICS_PORT": str(port)})
    comment = "spot on, thanks"
    try:
        async with (
            AgentClient(settings) as client,
            httpx.AsyncClient() as http,
            TopicReader(settings, settings.topics.metrics) as metrics_topic,
        ):
            answer = await client.ask("add 2 and 3", session_id="fb", timeout=60, **IDS)
            assert answer.ok
            await client.feedback(answer, 5, comment=comment)
            await client.feedback(answer.response_id, 1)
            url = f"http://127.0.0.1:{port}/metrics"

            async def counted() -> bool:
                text = (await http.get(url)).text
                return _sample(text, "agentstream_feedback_total", rating="1") >= 1

            await wait_until(counted, "feedback in /metrics")
            text = (await http.get(url)).text
            codec = AvroCodec()

            def feedback_events() -> list[MetricsEvent]:
                events = [codec.decode_record(MetricsEvent, r.value) for r in metrics_topic.records]
                return [e for e in events if e.outcome == "FEEDBACK"]

            await metrics_topic.wait_for(lambda: len(feedback_events()) == 2, what="feedback")
    finally:
        stop_worker(proc)
    assert _sample(text, "agentstream_feedback_total", rating="5") == 1
    assert _sample(text, "agentstream_feedback_comment_chars_sum") == len(comment)
    assert comment not in text  # only the length is recorded
    events = sorted(feedback_events(), key=lambda e: e.feedback_rating or 0)
    assert [(e.feedback_rating, e.feedback_comment_chars) for e in events] == [
        (1, 0),
        (5, len(comment)),
    ]
    assert {(e.request_id, e.model) for e in events} == {(answer.request_id, "local-rules")}


def _sample(text: str, name: str, **labels: str) -> float:
    """One sample of agent "default" and model "local-rules" (0.0 when absent)."""
    wanted = {"agent": "default", "model": "local-rules", **labels}
    selector = ",".join(f'{k}="{v}"' for k, v in sorted(wanted.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0][len(name) + 1 :] == selector:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
