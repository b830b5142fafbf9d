"""The Anthropic provider against a local server speaking the Messages API format."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from agentstream.llm.anthropic import AnthropicLLM
from agentstream.llm.base import ChatMessage, LLMRequest, ToolCall, ToolSpec
from agentstream.llm.exceptions import LLMContentPolicyError, LLMInvalidResponseError
from agentstream.llm.pricing import ModelPrice, PriceTable
from tests.support.llm_servers import FakeLLMServer, Reply, anthropic_message

API_KEY = "sk-ant-test-very-secret"
TIME_TOOL = ToolSpec(
    name="time.get_current_time",
    description="Current time in a zone",
    input_schema={"type": "object", "properties": {"timezone": {"type": "string"}}},
)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as s:
        yield s


@pytest.fixture
async def llm(server: FakeLLMServer) -> AsyncIterator[AnthropicLLM]:
    client = AnthropicLLM(
        model="claude-test",
        base_url=server.root_url,
        api_key=SecretStr(API_KEY),
        timeout_s=5.0,
        prices=PriceTable({"claude-test": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0)}),
    )
    yield client
    await client.aclose()


async def test_plain_completion(server: FakeLLMServer, llm: AnthropicLLM) -> None:
    body = anthropic_message("Hello!", input_tokens=100, output_tokens=20)
    body["usage"]["cache_read_input_tokens"] = 50
    server.push(Reply(body=body))
    result = await llm.complete(
        LLMRequest(
            messages=(
                ChatMessage(role="system", content="be brief"),
                ChatMessage(role="user", content="hi"),
            ),
            max_tokens=300,
            metadata={"k": "v"},
        )
    )
    assert result.content == "Hello!"
    assert result.finish_reason == "stop"
    assert result.model == "claude-test"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (150, 20)
    assert result.usage.cost_usd == pytest.approx((150 * 3.0 + 20 * 15.0) / 1e6)
    sent = server.arrivals[0]
    # x-api-key in older SDKs, a bearer token in anthropic 2.x
    auth = sent.headers.get("x-api-key") or sent.headers.get("authorization", "")
    assert auth.removeprefix("Bearer ") == API_KEY
    assert sent.body["system"] == "be brief"
    assert sent.body["max_tokens"] == 300
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert "metadata" not in sent.body


async def test_tool_use_both_ways(server: FakeLLMServer, llm: AnthropicLLM) -> None:
    server.push(
        Reply(
            body=anthropic_message(
                "Let me check.",
                tool_uses=[("toolu_1", "time_get_current_time", {"timezone": "Asia/Tokyo"})],
            )
        )
    )
    history = (
        ChatMessage(role="user", content="time in UTC and Paris?"),
        ChatMessage(
            role="assistant",
            content="Checking.",
            tool_calls=(
                ToolCall(
                    call_id="toolu_a", name="time.get_current_time", arguments={"timezone": "UTC"}
                ),
                ToolCall(
                    call_id="toolu_b",
                    name="time.get_current_time",
                    arguments={"timezone": "Europe/Paris"},
                ),
            ),
        ),
        ChatMessage(role="tool", content="10:00", tool_call_id="toolu_a"),
        ChatMessage(role="tool", content="11:00", tool_call_id="toolu_b"),
        ChatMessage(role="user", content="now Tokyo"),
    )
    result = await llm.complete(LLMRequest(messages=history, tools=(TIME_TOOL,)))
    assert result.content == "Let me check."
    assert result.finish_reason == "tool_calls"
    assert result.tool_calls == (
        ToolCall(
            call_id="toolu_1", name="time.get_current_time", arguments={"timezone": "Asia/Tokyo"}
        ),
    )
    body = server.arrivals[0].body
    assert body["tools"] == [
        {
            "name": "time_get_current_time",
            "description": TIME_TOOL.description,
            "input_schema": TIME_TOOL.input_schema,
        }
    ]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assistant = body["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Checking."}
    assert assistant[1] == {
        "type": "tool_use",
        "id": "toolu_a",
        "name": "time_get_current_time",
        "input": {"timezone": "UTC"},
    }
    results = body["messages"][2]["content"]  # both results and the next user text, one turn
    assert results[0] == {"type": "tool_result", "tool_use_id": "toolu_a", "content": "10:00"}
    assert results[1] == {"type": "tool_result", "tool_use_id": "toolu_b", "content": "11:00"}
    assert results[2] == {"type": "text", "text": "now Tokyo"}


async def test_refusal_and_wrong_shape(server: FakeLLMServer, llm: AnthropicLLM) -> None:
    request = LLMRequest(messages=(ChatMessage(role="user", content="x"),))
    server.push(Reply(body=anthropic_message("", stop_reason="refusal")))
    with pytest.raises(LLMContentPolicyError):
        await llm.complete(request)
    server.push(Reply(body={"type": "message", "id": "m"}))
    with pytest.raises(LLMInvalidResponseError):
        await llm.complete(request)


async def test_health_check(llm: AnthropicLLM) -> None:
    assert await llm.health_check()
