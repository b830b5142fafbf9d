"""The OpenAI-compatible provider against a local server speaking the chat-completions format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from agentstream.llm.base import ChatMessage, LLMClient, LLMRequest, ToolCall, ToolSpec
from agentstream.llm.exceptions import LLMContentPolicyError, LLMInvalidResponseError
from agentstream.llm.openai_compat import OpenAICompatLLM
from agentstream.llm.pricing import ModelPrice, PriceTable
from tests.support.llm_servers import FakeLLMServer, Reply, openai_completion

API_KEY = "sk-test-very-secret"
TIME_TOOL = ToolSpec(
    name="time.get_current_time",
    description="Current time in a zone",
    input_schema={"type": "object", "properties": {"timezone": {"type": "string"}}},
)
CALC = ToolSpec(
    name="calculator",
    description="Evaluate arithmetic",
    input_schema={"type": "object", "properties": {"expression": {"type": "string"}}},
)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: FakeLLMServer) -> AsyncIterator[OpenAICompatLLM]:
    client = OpenAICompatLLM(
        model="gpt-test",
        base_url=server.base_url,
        api_key=SecretStr(API_KEY),
        timeout_s=5.0,
        prices=PriceTable({"gpt-test": ModelPrice(input_per_mtok=2.0, output_per_mtok=8.0)}),
    )
    yield client
    await client.aclose()


def _request(*messages: ChatMessage, tools: tuple[ToolSpec, ...] = ()) -> LLMRequest:
    return LLMRequest(
        messages=messages, tools=tools, max_tokens=256, metadata={"secret-meta": "nope"}
    )


async def test_plain_completion_usage_and_cost(server: FakeLLMServer, llm: OpenAICompatLLM) -> None:
    server.push(
        Reply(body=openai_completion("Hi!", model="gpt-test-2026-01-01", prompt_tokens=1000))
    )
    result = await llm.complete(
        _request(
            ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")
        )
    )
    assert isinstance(llm, LLMClient)
    assert result.content == "Hi!"
    assert result.tool_calls == ()
    assert result.finish_reason == "stop"
    assert result.model == "gpt-test-2026-01-01"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (1000, 7)
    assert result.usage.cost_usd == pytest.approx((1000 * 2.0 + 7 * 8.0) / 1e6)
    sent = server.arrivals[0]
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.body["model"] == "gpt-test"
    assert sent.body["max_tokens"] == 256
    assert sent.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
    ]
    assert "tools" not in sent.body
    assert "metadata" not in sent.body  # request metadata never goes to the provider


async def test_tool_calls_both_ways(server: FakeLLMServer, llm: OpenAICompatLLM) -> None:
    server.push(
        Reply(
            body=openai_completion(
                None,
                tool_calls=[
                    ("call_a", "time_get_current_time", '{"timezone": "Asia/Tokyo"}'),
                    ("call_b", "calculator", '{"expression": "2 + 3"}'),
                ],
            )
        )
    )
    history = (
        ChatMessage(role="user", content="time in Tokyo?"),
        ChatMessage(
            role="assistant",
            tool_calls=(
                ToolCall(
                    call_id="call_0", name="time.get_current_time", arguments={"timezone": "UTC"}
                ),
            ),
        ),
        ChatMessage(role="tool", content="2026-11-01T10:00:00Z", tool_call_id="call_0"),
        ChatMessage(role="user", content="and Tokyo, plus 2 + 3"),
    )
    result = await llm.complete(_request(*history, tools=(TIME_TOOL, CALC)))
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (
        ToolCall(
            call_id="call_a", name="time.get_current_time", arguments={"timezone": "Asia/Tokyo"}
        ),
        ToolCall(call_id="call_b", name="calculator", arguments={"expression": "2 + 3"}),
    )
    body = server.arrivals[0].body
    assert [t["function"]["name"] for t in body["tools"]] == ["time_get_current_time", "calculator"]
    assert body["tools"][0]["function"]["parameters"] == TIME_TOOL.input_schema
    assistant, tool = body["messages"][1], body["messages"][2]
    assert assistant["role"] == "assistant"
    assert assistant["tool_calls"][0]["id"] == "call_0"
    assert assistant["tool_calls"][0]["function"]["name"] == "time_get_current_time"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"timezone": "UTC"}
    assert tool == {"role": "tool", "tool_call_id": "call_0", "content": "2026-11-01T10:00:00Z"}


async def test_missing_usage_is_estimated(server: FakeLLMServer, llm: OpenAICompatLLM) -> None:
    body = openai_completion("ok")
    del body["usage"]
    server.push(Reply(body=body))
    result = await llm.complete(_request(ChatMessage(role="user", content="hello")))
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens > 0


@pytest.mark.parametrize(
    "arguments", ['{"expression": ', '["not", "an", "object"]'], ids=["not-json", "not-object"]
)
async def test_bad_tool_arguments_are_invalid_responses(
    server: FakeLLMServer, llm: OpenAICompatLLM, arguments: str
) -> None:
    server.push(Reply(body=openai_completion(None, tool_calls=[("c", "calculator", arguments)])))
    with pytest.raises(LLMInvalidResponseError) as caught:
        await llm.complete(_request(ChatMessage(role="user", content="x"), tools=(CALC,)))
    assert not caught.value.retriable
    assert not caught.value.counts_for_breaker
    assert "expression" not in str(caught.value)


async def test_wrong_shape_and_content_filter(server: FakeLLMServer, llm: OpenAICompatLLM) -> None:
    server.push(Reply(body={"object": "chat.completion", "choices": []}))
    with pytest.raises(LLMInvalidResponseError):
        await llm.complete(_request(ChatMessage(role="user", content="x")))
    server.push(Reply(body=openai_completion("", finish_reason="content_filter")))
    with pytest.raises(LLMContentPolicyError):
        await llm.complete(_request(ChatMessage(role="user", content="x")))


async def test_health_check(server: FakeLLMServer, llm: OpenAICompatLLM) -> None:
    assert await llm.health_check()
    dead = OpenAICompatLLM(model="m", base_url="http://127.0.0.1:9/v1", timeout_s=1.0)
    try:
        assert not await dead.health_check()
    finally:
        await dead.aclose()
