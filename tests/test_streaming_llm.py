"""Streaming model calls: providers against a local server speaking their SSE formats, the local
model word by word, the resilience wrappers, and the coalescing sink of the generation stage."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from agentstream.config import StreamingSettings
from agentstream.llm.anthropic import AnthropicLLM
from agentstream.llm.base import ChatMessage, LLMRequest, LLMResult, ToolSpec
from agentstream.llm.exceptions import LLMConnectionError, LLMUnavailableError
from agentstream.llm.local import LocalRuleModel
from agentstream.llm.openai_compat import OpenAICompatLLM
from agentstream.llm.streaming import stream_or_complete, words
from agentstream.llm.wrappers import FallbackLLM, RetryingLLM
from agentstream.processors.streaming import StreamOutput, TurnStream
from agentstream.resilience.retry import RetryPolicy
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import StreamDelta
from agentstream.schemas.records import Outbound
from agentstream.state.attempts import MemoryAttempts
from agentstream.state.session import RequestIds
from tests.support.llm_servers import (
    FakeLLMServer,
    Reply,
    anthropic_stream,
    openai_stream,
)

PIECES = ["The ", "answer ", "is ", "forty", "-two", "."]
CALC = ToolSpec(
    name="calculator",
    description="Evaluate arithmetic",
    input_schema={"type": "object", "properties": {"expression": {"type": "string"}}},
)


class RecordingSink:
    """A TokenSink that keeps every attempt's deltas and whether it completed."""

    def __init__(self) -> None:
        self.attempts: list[list[str]] = []
        self.completed: list[bool] = []

    @contextlib.asynccontextmanager
    async def attempt(self) -> AsyncIterator[RecordingSink]:
        self.attempts.append([])
        self.completed.append(False)
        yield self
        self.completed[-1] = True

    async def write(self, text: str) -> None:
        self.attempts[-1].append(text)


def _request(text: str = "hello", tools: tuple[ToolSpec, ...] = ()) -> LLMRequest:
    return LLMRequest(messages=(ChatMessage(role="user", content=text),), tools=tools)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as s:
        yield s


def _openai(server: FakeLLMServer) -> OpenAICompatLLM:
    return OpenAICompatLLM(
        model="gpt-test", base_url=server.base_url, api_key=SecretStr("k"), timeout_s=5.0
    )


async def test_openai_streams_each_delta_and_returns_the_whole_answer(
    server: FakeLLMServer,
) -> None:
    server.push(Reply(events=openai_stream(PIECES, prompt_tokens=21, completion_tokens=6)))
    llm = _openai(server)
    sink = RecordingSink()
    try:
        result = await llm.stream(_request(), sink)
    finally:
        await llm.aclose()
    assert sink.attempts == [PIECES]
    assert sink.completed == [True]
    assert result.content == "".join(PIECES)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (21, 6)
    assert result.finish_reason == "stop"
    body = server.arrivals[0].body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_openai_streamed_tool_call_fragments_are_assembled(server: FakeLLMServer) -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> tuple[None, dict[str, Any]]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return None, {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [choice],
        }

    def fragment(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    events = [
        chunk({"role": "assistant", "content": "Let me add. "}),
        chunk(fragment(0, id="call_a", type="function", function={"name": "calcu"})),
        chunk(fragment(0, function={"name": "lator", "arguments": '{"expression": '})),
        chunk(fragment(1, id="call_b", type="function", function={"name": "calculator"})),
        chunk(fragment(0, function={"arguments": '"2 + 3"}'})),
        chunk(fragment(1, function={"arguments": '{"expression": "4 * 5"}'})),
        chunk({}, "tool_calls"),
        (None, "[DONE]"),
    ]
    server.push(Reply(events=events))
    llm = _openai(server)
    sink = RecordingSink()
    try:
        result = await llm.stream(_request("add 2 and 3", tools=(CALC,)), sink)
    finally:
        await llm.aclose()
    assert sink.attempts == [["Let me add. "]]
    assert result.content == "Let me add. "
    assert result.finish_reason == "tool_calls"
    assert [(c.call_id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_a", "calculator", {"expression": "2 + 3"}),
        ("call_b", "calculator", {"expression": "4 * 5"}),
    ]


async def test_openai_stream_without_usage_is_estimated(server: FakeLLMServer) -> None:
    server.push(Reply(events=openai_stream(PIECES, usage=False)))
    llm = _openai(server)
    try:
        result = await llm.stream(_request(), RecordingSink())
    finally:
        await llm.aclose()
    assert result.content == "".join(PIECES)
    assert result.usage.completion_tokens > 0


async def test_openai_stream_cut_midway_is_a_retriable_connection_error(
    server: FakeLLMServer,
) -> None:
    server.push(Reply(events=openai_stream(PIECES), cut_after=3))
    llm = _openai(server)
    sink = RecordingSink()
    try:
        with pytest.raises(LLMConnectionError) as caught:
            await llm.stream(_request(), sink)
    finally:
        await llm.aclose()
    assert caught.value.retriable
    assert sink.attempts == [PIECES[:2]]  # the role chunk, then two text deltas
    assert sink.completed == [False]


async def test_retry_streams_a_new_attempt_after_a_cut(server: FakeLLMServer) -> None:
    server.push(
        Reply(events=openai_stream(PIECES), cut_after=3), Reply(events=openai_stream(PIECES))
    )
    inner = _openai(server)
    llm = RetryingLLM(
        inner, RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0, max_total_s=10.0)
    )
    sink = RecordingSink()
    try:
        result = await llm.stream(_request(), sink)
    finally:
        await llm.aclose()
    assert sink.attempts == [PIECES[:2], PIECES]
    assert sink.completed == [False, True]
    assert "".join(sink.attempts[-1]) == result.content


async def test_anthropic_streams_text_deltas(server: FakeLLMServer) -> None:
    server.push(Reply(events=anthropic_stream(PIECES, input_tokens=9, output_tokens=6)))
    llm = AnthropicLLM(
        model="claude-test", base_url=server.root_url, api_key=SecretStr("k"), timeout_s=5.0
    )
    sink = RecordingSink()
    try:
        result = await llm.stream(_request(), sink)
    finally:
        await llm.aclose()
    assert sink.attempts == [PIECES]
    assert sink.completed == [True]
    assert result.content == "".join(PIECES)
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 6)
    assert server.arrivals[0].body["stream"] is True


async def test_anthropic_stream_cut_midway_is_a_connection_error(server: FakeLLMServer) -> None:
    server.push(Reply(events=anthropic_stream(PIECES), cut_after=4))
    llm = AnthropicLLM(
        model="claude-test", base_url=server.root_url, api_key=SecretStr("k"), timeout_s=5.0
    )
    sink = RecordingSink()
    try:
        with pytest.raises(LLMConnectionError):
            await llm.stream(_request(), sink)
    finally:
        await llm.aclose()
    assert sink.completed == [False]


async def test_local_model_streams_word_by_word_the_same_answer() -> None:
    model = LocalRuleModel(latency_s=0.01)
    whole = await model.complete(_request("tell me something nice please"))
    sink = RecordingSink()
    streamed = await model.stream(_request("tell me something nice please"), sink)
    assert streamed == whole
    assert len(sink.attempts[0]) == len(whole.content.split())
    assert "".join(sink.attempts[0]) == whole.content


async def test_local_tool_call_streams_no_text_but_completes() -> None:
    sink = RecordingSink()
    result = await LocalRuleModel().stream(_request("add 2 and 3", tools=(CALC,)), sink)
    assert result.tool_calls
    assert sink.attempts == [[]]
    assert sink.completed == [True]


class _Whole:
    """An LLMClient that cannot stream."""

    name = "whole"

    async def complete(self, request: LLMRequest) -> LLMResult:
        return LLMResult(content="all at once")

    async def health_check(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def test_a_client_that_cannot_stream_answers_as_one_delta() -> None:
    sink = RecordingSink()
    result = await stream_or_complete(_Whole(), _request(), sink)
    assert sink.attempts == [["all at once"]]
    assert result.content == "all at once"


async def test_fallback_streams_the_next_entry_as_a_new_attempt() -> None:
    failing = LocalRuleModel(failure_rate=1.0)
    llm = FallbackLLM([failing, LocalRuleModel()], route="main")
    sink = RecordingSink()
    result = await llm.stream(_request("hi there"), sink)
    assert sink.completed == [False, True]
    assert "".join(sink.attempts[-1]) == result.content


async def test_local_injected_failure_raises_before_any_text() -> None:
    sink = RecordingSink()
    with pytest.raises(LLMUnavailableError):
        await LocalRuleModel(failure_rate=1.0).stream(_request(), sink)
    assert sink.attempts == [[]]


@given(st.text())
def test_words_join_back_to_the_text(text: str) -> None:
    assert "".join(words(text)) == text


# --- the coalescing sink (processors/streaming.py) ----------------------------------------------


class _Output:
    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.deltas: list[StreamDelta] = []

    async def send(self, record: Outbound) -> Any:
        self.deltas.append(self.codec.decode_record(StreamDelta, record.value))
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


def _turn_stream(settings: StreamingSettings) -> tuple[TurnStream, _Output]:
    codec = AvroCodec()
    out = _Output(codec)
    output = StreamOutput(
        topic="agent.stream", send=out.send, attempts=MemoryAttempts(), settings=settings
    )
    ids = RequestIds(request_id="r1", session_id="s1", user_id="u1", tenant_id="t1")
    return TurnStream(output, codec, ids, turn=2), out


async def test_sink_sends_the_first_text_at_once_then_coalesces_by_count() -> None:
    stream, out = _turn_stream(StreamingSettings(flush_interval_ms=60_000, flush_tokens=4))
    async with stream.attempt() as attempt:
        for i in range(10):
            await attempt.write(f"w{i} ")
    texts = [d.text for d in out.deltas]
    assert texts == ["w0 ", "w1 w2 w3 w4 ", "w5 w6 w7 w8 ", "w9 "]
    assert [d.sequence for d in out.deltas] == [0, 1, 2, 3]
    assert [d.final for d in out.deltas] == [False, False, False, True]
    assert {(d.request_id, d.session_id, d.tenant_id, d.turn, d.attempt) for d in out.deltas} == {
        ("r1", "s1", "t1", 2, 1)
    }


async def test_sink_flushes_held_text_after_the_interval() -> None:
    stream, out = _turn_stream(StreamingSettings(flush_interval_ms=1, flush_tokens=1000))
    async with stream.attempt() as attempt:
        await attempt.write("a")
        await attempt.write("b")
        while len(out.deltas) < 2:  # the timer sends "b" without a further write
            await _tick()
        assert out.deltas[1].text == "b"
    assert out.deltas[-1].final


async def _tick() -> None:
    await asyncio.sleep(0.001)


async def test_a_failed_attempt_stays_partial_and_the_next_gets_a_higher_number() -> None:
    stream, out = _turn_stream(StreamingSettings(flush_interval_ms=60_000, flush_tokens=2))

    async def cut() -> None:
        async with stream.attempt() as attempt:
            for piece in ("a", "b", "c", "d", "e", "f"):
                await attempt.write(piece)
            raise RuntimeError("cut")

    with pytest.raises(RuntimeError):
        await cut()
    async with stream.attempt() as attempt:
        await attempt.write("whole")
    first = [d for d in out.deltas if d.attempt == 1]
    second = [d for d in out.deltas if d.attempt == 2]
    assert not any(d.final for d in first)
    assert "".join(d.text for d in first) == "abcde"  # "f" was held, never sent
    assert "".join(d.text for d in second) == "whole"
    assert second[-1].final


async def test_replay_sends_the_content_as_one_final_attempt() -> None:
    stream, out = _turn_stream(StreamingSettings())
    await stream.replay("from the journal")
    assert "".join(d.text for d in out.deltas) == "from the journal"
    assert out.deltas[-1].final


async def test_random_pieces_always_concatenate() -> None:
    rng = random.Random(7)
    stream, out = _turn_stream(StreamingSettings(flush_interval_ms=60_000, flush_tokens=3))
    pieces = ["".join(rng.choice("ab ") for _ in range(rng.randint(1, 5))) for _ in range(50)]
    async with stream.attempt() as attempt:
        for piece in pieces:
            await attempt.write(piece)
    assert "".join(d.text for d in out.deltas) == "".join(pieces)
