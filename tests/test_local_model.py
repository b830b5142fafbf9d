"""The local rule model: deterministic tool calls, final answers, triggers and failure injection."""

from __future__ import annotations

import pytest

from agentstream.config import LLMSettings, Settings
from agentstream.exceptions import ConfigError
from agentstream.llm.base import (
    ChatMessage,
    LLMClient,
    LLMRequest,
    LLMResult,
    ToolCall,
    ToolSpec,
)
from agentstream.llm.exceptions import LLMUnavailableError
from agentstream.llm.factory import build_llm
from agentstream.llm.local import LocalRuleModel
from agentstream.llm.tokens import estimate_message_tokens, estimate_tokens
from agentstream.tools.builtin import CALCULATOR_SPEC, CURRENT_TIME_SPEC
from agentstream.tools.calculator import evaluate

TOOLS = (CALCULATOR_SPEC, CURRENT_TIME_SPEC)


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


async def ask(
    model: LocalRuleModel, *messages: ChatMessage, tools: tuple[ToolSpec, ...] = TOOLS
) -> LLMResult:
    return await model.complete(LLMRequest(messages=messages, tools=tools))


def test_implements_protocol_and_is_labelled() -> None:
    model = LocalRuleModel()
    assert isinstance(model, LLMClient)
    assert model.name == "local-rules"


async def test_arithmetic_request_calls_calculator() -> None:
    result = await ask(LocalRuleModel(), user("add 2 and 3"))
    assert result.model == "local-rules"
    assert result.finish_reason == "tool_calls"
    (call,) = result.tool_calls
    assert call.name == "calculator"
    assert call.call_id == "call_0_0"
    assert evaluate(call.arguments["expression"]) == 5


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("what is 2 + 3", 5),
        ("multiply 4 by 5", 20),
        ("calculate (1+2)*3", 9),
        ("subtract 2 from 10", 8),
        ("divide 10 by 4", 2.5),
    ],
)
async def test_arithmetic_phrasings(text: str, value: float) -> None:
    (call,) = (await ask(LocalRuleModel(), user(text))).tool_calls
    assert evaluate(call.arguments["expression"]) == value


async def test_final_answer_from_calculator_result() -> None:
    model = LocalRuleModel()
    first = await ask(model, user("add 2 and 3"))
    history = (
        user("add 2 and 3"),
        ChatMessage(role="assistant", tool_calls=first.tool_calls),
        ChatMessage(role="tool", content="5", tool_call_id=first.tool_calls[0].call_id),
    )
    final = await ask(model, *history)
    assert final.tool_calls == ()
    assert final.finish_reason == "stop"
    assert "5" in final.content
    assert final.content == "The answer is 5."


async def test_time_request_and_answer() -> None:
    model = LocalRuleModel()
    first = await ask(model, user("what time is it in Tokyo"))
    (call,) = first.tool_calls
    assert call.name == "current_time"
    assert call.arguments == {"timezone": "Asia/Tokyo"}
    stamp = "2026-11-24T07:12:03+09:00 (JST)"
    final = await ask(
        model,
        user("what time is it in Tokyo"),
        ChatMessage(role="assistant", tool_calls=first.tool_calls),
        ChatMessage(role="tool", content=stamp, tool_call_id=call.call_id),
    )
    assert stamp in final.content
    assert "Asia/Tokyo" in final.content


async def test_time_defaults_to_utc() -> None:
    (call,) = (await ask(LocalRuleModel(), user("current time"))).tool_calls
    assert call.arguments == {"timezone": "UTC"}


async def test_mcp_style_time_tool_uses_schema_argument_name() -> None:
    mcp_tool = ToolSpec(
        name="time.get_current_time",
        description="",
        input_schema={"type": "object", "properties": {"tz_name": {"type": "string"}}},
    )
    (call,) = (await ask(LocalRuleModel(), user("time in London"), tools=(mcp_tool,))).tool_calls
    assert call.name == "time.get_current_time"
    assert call.arguments == {"tz_name": "Europe/London"}


async def test_missing_tool_gives_plain_reply() -> None:
    result = await ask(LocalRuleModel(), user("add 2 and 3"), tools=())
    assert result.tool_calls == ()
    assert "calculator" in result.content


async def test_error_result_is_reported() -> None:
    call = ToolCall(call_id="call_0_0", name="calculator", arguments={"expression": "1/0"})
    result = await ask(
        LocalRuleModel(),
        user("what is 1/0"),
        ChatMessage(role="assistant", tool_calls=(call,)),
        ChatMessage(role="tool", content="Error: division by zero", tool_call_id="call_0_0"),
    )
    assert result.tool_calls == ()
    assert "failed" in result.content
    assert "division by zero" in result.content


async def test_plain_message_is_deterministic_and_not_echoed() -> None:
    text = "tell me something about zebras please"
    first = await ask(LocalRuleModel(), user(text))
    second = await ask(LocalRuleModel(), user(text))
    assert first == second
    assert first.tool_calls == ()
    assert "zebras" not in first.content
    assert "6 words" in first.content


async def test_loop_trigger_keeps_calling_calculator() -> None:
    model = LocalRuleModel()
    messages: list[ChatMessage] = [user("please [loop]")]
    for turn in range(4):
        result = await ask(model, *messages)
        (call,) = result.tool_calls
        assert call.name == "calculator"
        assert call.arguments == {"expression": "1 + 1"}
        assert call.call_id == f"call_{turn}_0"
        messages.append(ChatMessage(role="assistant", tool_calls=result.tool_calls))
        messages.append(ChatMessage(role="tool", content="2", tool_call_id=call.call_id))


async def test_fail_trigger_raises() -> None:
    with pytest.raises(LLMUnavailableError) as info:
        await ask(LocalRuleModel(), user("hello [fail]"))
    assert info.value.retriable


async def test_calls_counter_counts_every_call() -> None:
    model = LocalRuleModel()
    await ask(model, user("hi"))
    with pytest.raises(LLMUnavailableError):
        await ask(model, user("[fail]"))
    await ask(model, user("add 2 and 3"))
    assert model.calls == 3


async def test_failure_rate_one_always_raises() -> None:
    model = LocalRuleModel(failure_rate=1.0, seed=7)
    for _ in range(5):
        with pytest.raises(LLMUnavailableError):
            await ask(model, user("hi"))
    assert model.calls == 5


async def test_failure_injection_is_seeded() -> None:
    async def pattern(seed: int) -> list[bool]:
        model = LocalRuleModel(failure_rate=0.5, seed=seed)
        outcomes: list[bool] = []
        for _ in range(20):
            try:
                await ask(model, user("hi"))
            except LLMUnavailableError:
                outcomes.append(False)
            else:
                outcomes.append(True)
        return outcomes

    first = await pattern(3)
    assert first == await pattern(3)
    assert True in first
    assert False in first


async def test_usage_is_estimated_and_free() -> None:
    messages = (ChatMessage(role="system", content="be brief"), user("hello there"))
    result = await ask(LocalRuleModel(), *messages)
    assert result.usage.prompt_tokens == sum(estimate_message_tokens(m) for m in messages)
    assert result.usage.completion_tokens >= estimate_tokens(result.content)
    assert result.usage.cost_usd == 0.0


async def test_health_and_close() -> None:
    model = LocalRuleModel()
    assert await model.health_check() is True
    await model.aclose()


def test_estimate_tokens() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("a") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    call = ToolCall(call_id="c", name="calculator", arguments={"expression": "2 + 3"})
    bare = estimate_message_tokens(ChatMessage(role="assistant"))
    assert estimate_message_tokens(ChatMessage(role="assistant", tool_calls=(call,))) > bare > 0


def test_factory_builds_local_model() -> None:
    settings = Settings(llm=LLMSettings(model="local", local_failure_rate=0.25, local_seed=4))
    model = build_llm(settings)
    assert isinstance(model, LocalRuleModel)
    assert model.failure_rate == 0.25


def test_factory_rejects_unknown_model() -> None:
    with pytest.raises(ConfigError, match="only 'local'"):
        build_llm(Settings(llm=LLMSettings(model="gpt-x")))


def test_invalid_constructor_arguments() -> None:
    with pytest.raises(ConfigError):
        LocalRuleModel(failure_rate=1.5)
    with pytest.raises(ConfigError):
        LocalRuleModel(latency_s=-1)


async def test_non_numeric_calculator_result_is_reported_as_failure() -> None:
    call = ToolCall(call_id="call_0_0", name="calculator", arguments={"expression": "2+3"})
    result = await ask(
        LocalRuleModel(),
        user("add 2 and 3"),
        ChatMessage(role="assistant", tool_calls=(call,)),
        ChatMessage(role="tool", content="tool access denied: calculator", tool_call_id="call_0_0"),
    )
    assert result.content == "The calculator tool failed: tool access denied: calculator"


# --- the call directive ---------------------------------------------------------------------


async def test_call_directive_calls_any_tool_as_written() -> None:
    result = await ask(LocalRuleModel(), user('call crm.lookup {"customer": "c-42", "n": [1, 2]}'))
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert (call.name, call.arguments) == ("crm.lookup", {"customer": "c-42", "n": [1, 2]})
    # not offered either: the tool stage's own checks decide (permissions, unknown names)
    assert "crm.lookup" not in {t.name for t in TOOLS}


async def test_several_directives_make_several_calls_in_one_turn() -> None:
    text = 'please run these:\ncall calculator {\n  "expression": "2 + 3"\n}\ncall agent.helper'
    result = await ask(LocalRuleModel(), user(text))
    assert [(c.call_id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_0_0", "calculator", {"expression": "2 + 3"}),
        ("call_0_1", "agent.helper", {}),
    ]


async def test_directive_answer_is_the_result() -> None:
    model = LocalRuleModel()
    text = 'call notes.read {"key": "plan"}'
    first = await ask(model, user(text))
    [call] = first.tool_calls
    final = await ask(
        model,
        user(text),
        ChatMessage(role="assistant", tool_calls=first.tool_calls),
        ChatMessage(role="tool", content='{"plan": "v1"}', tool_call_id=call.call_id),
    )
    assert (final.content, final.tool_calls) == ('{"plan": "v1"}', ())


async def test_directive_answer_for_several_results_names_each_tool() -> None:
    calls = (
        ToolCall(call_id="call_0_0", name="a", arguments={}),
        ToolCall(call_id="call_0_1", name="b", arguments={}),
    )
    final = await ask(
        LocalRuleModel(),
        user("call a\ncall b"),
        ChatMessage(role="assistant", tool_calls=calls),
        ChatMessage(role="tool", content="1", tool_call_id="call_0_0"),
        ChatMessage(role="tool", content="Error: no", tool_call_id="call_0_1"),
    )
    assert final.content == "a: 1\nb: Error: no"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("call x {bad json}", "invalid JSON"),
        ("call x [1, 2]", "must be a JSON object"),
    ],
)
async def test_directive_with_unusable_arguments_gets_a_reply_and_no_call(
    text: str, problem: str
) -> None:
    result = await ask(LocalRuleModel(), user(text))
    assert result.tool_calls == ()
    assert problem in result.content
    assert "call <tool>" in result.content


@pytest.mark.parametrize(
    "text", ["Call me when you can", "please call me back later", "call me maybe", "recall x {}"]
)
async def test_ordinary_text_is_not_a_directive(text: str) -> None:
    result = await ask(LocalRuleModel(), user(text))
    assert result.tool_calls == ()
