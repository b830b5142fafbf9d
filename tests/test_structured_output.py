"""Structured output through each provider's native mode, against the local wire-format server:
OpenAI ``response_format`` with a JSON schema; Anthropic a forced call of one output tool whose
input is the answer. And an agent's model route and temperature reaching the provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from agentstream.llm.anthropic import AnthropicLLM
from agentstream.llm.base import ChatMessage, LLMClient, LLMRequest, LLMResult, ToolSpec
from agentstream.llm.openai_compat import OpenAICompatLLM
from agentstream.llm.routing import ModelRouter
from agentstream.llm.structured import OUTPUT_NAME
from tests.support.llm_servers import FakeLLMServer, Reply, anthropic_message, openai_completion

OBJECT = {"type": "object", "properties": {"total": {"type": "integer"}}, "required": ["total"]}
CALC = ToolSpec(name="calculator", description="sums", input_schema={"type": "object"})


def _request(schema: dict[str, Any], *, tools: tuple[ToolSpec, ...] = ()) -> LLMRequest:
    return LLMRequest(
        messages=(
            ChatMessage(role="system", content="Answer in JSON."),
            ChatMessage(role="user", content="2+2"),
        ),
        tools=tools,
        output_schema=schema,
        temperature=0.3,
    )


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as srv:
        yield srv


async def test_openai_gets_a_json_schema_response_format(server: FakeLLMServer) -> None:
    llm = OpenAICompatLLM(
        model="gpt-test", base_url=server.base_url, api_key=SecretStr("k"), temperature=0.9
    )
    server.push(Reply(body=openai_completion('{"total": 4}')))
    try:
        result = await llm.complete(_request(OBJECT))
    finally:
        await llm.aclose()
    body = server.arrivals[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": OUTPUT_NAME, "schema": OBJECT, "strict": False},
    }
    assert body["temperature"] == 0.3  # the agent's, over the provider's
    assert json.loads(result.content) == {"total": 4}


@pytest.fixture
async def claude(server: FakeLLMServer) -> AsyncIterator[AnthropicLLM]:
    client = AnthropicLLM(model="claude-test", base_url=server.root_url, api_key=SecretStr("k"))
    yield client
    await client.aclose()


async def test_anthropic_answers_through_a_forced_output_tool(
    server: FakeLLMServer, claude: AnthropicLLM
) -> None:
    server.push(
        Reply(body=anthropic_message("Here you go:", tool_uses=[("t1", OUTPUT_NAME, {"total": 4})]))
    )
    result = await claude.complete(_request(OBJECT))
    body = server.arrivals[0].body
    assert body["tool_choice"] == {"type": "tool", "name": OUTPUT_NAME}
    assert body["tools"] == [
        {
            "name": OUTPUT_NAME,
            "description": "Give your final answer: call this tool with it as the input.",
            "input_schema": OBJECT,
        }
    ]
    assert body["temperature"] == 0.3
    assert json.loads(result.content) == {"total": 4}  # the tool's input, not the text
    assert result.tool_calls == ()


async def test_anthropic_with_other_tools_must_call_one_and_non_objects_are_wrapped(
    server: FakeLLMServer, claude: AnthropicLLM
) -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    server.push(
        Reply(body=anthropic_message(None, tool_uses=[("t1", "calculator", {"e": "2+2"})])),
        Reply(body=anthropic_message(None, tool_uses=[("t2", OUTPUT_NAME, {"value": [4]})])),
    )
    first = await claude.complete(_request(schema, tools=(CALC,)))
    second = await claude.complete(_request(schema, tools=(CALC,)))
    body = server.arrivals[0].body
    assert body["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in body["tools"]] == ["calculator", OUTPUT_NAME]
    assert body["tools"][1]["input_schema"] == {
        "type": "object",
        "properties": {"value": schema},
        "required": ["value"],
    }
    assert [c.name for c in first.tool_calls] == ["calculator"]  # a real tool call goes on
    assert json.loads(second.content) == [4]


class _Named:
    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: LLMRequest) -> LLMResult:
        return LLMResult(content=self._name)

    async def health_check(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


def test_an_agents_route_comes_after_the_requests_and_before_the_tenants() -> None:
    routes: dict[str, LLMClient] = {n: _Named(n) for n in ("main", "cheap", "smart")}
    router = ModelRouter(routes, default="main", tenant_routes={"acme": "cheap"})
    assert router.route_name(tenant_id="acme", agent_route="smart") == "smart"
    assert router.route_name(tenant_id="acme") == "cheap"
    assert router.route_name(metadata={"model": "main"}, agent_route="smart") == "main"
    assert router.route_name(agent_route=None) == "main"
