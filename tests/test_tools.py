"""Built-in tools, the safe calculator and the registry's execute contract."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from agentstream.exceptions import AgentStreamError
from agentstream.llm.base import ToolSpec
from agentstream.tools.base import Tool, ToolExecutor
from agentstream.tools.builtin import CalculatorTool, CurrentTimeTool
from agentstream.tools.calculator import calculate
from agentstream.tools.exceptions import (
    DuplicateToolError,
    ToolArgumentsError,
    ToolDeniedError,
    ToolError,
    ToolExecutionError,
    ToolNotFoundError,
    ToolTimeoutError,
)
from agentstream.tools.registry import ToolRegistry, default_registry

SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}


class CountingTool:
    """Records calls; optionally fails or blocks forever."""

    def __init__(self, name: str = "echo", *, fail: bool = False, block: bool = False) -> None:
        self._spec = ToolSpec(name=name, description="test tool", input_schema=SCHEMA)
        self.calls = 0
        self.fail = fail
        self.block = block
        self.never = asyncio.Event()

    @property
    def spec(self) -> ToolSpec:
        return self._spec

    @property
    def read_only(self) -> bool:
        return False

    async def call(self, arguments: dict[str, Any]) -> str:
        self.calls += 1
        if self.block:
            await self.never.wait()
        if self.fail:
            raise RuntimeError("boom")
        return str(arguments["text"]).upper()


# --- calculator -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3", "5"),
        ("10 / 4", "2.5"),
        ("10 / 5", "2"),
        ("(1 + 2) * 3", "9"),
        ("7 // 2", "3"),
        ("-7 % 3", "2"),
        ("2 ** 10", "1024"),
        ("2 ** -1", "0.5"),
        ("-(3 - 5)", "2"),
        ("+4", "4"),
        ("0.1 + 0.2", "0.3"),
        ("1.5 * 2", "3"),
    ],
)
def test_calculator_correct(expression: str, expected: str) -> None:
    assert calculate(expression) == expected


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "x + 1",
        "abs(-1)",
        "(1).__class__",
        "().__class__.__bases__",
        "[1, 2][0]",
        "'a' * 3",
        "True + 1",
        "1 < 2",
        "lambda: 1",
        "2 ^ 3",
        "",
        "1 +",
        "1" * 201,
        "-" * 100 + "1",
        "2 ** 100000",
    ],
)
def test_calculator_rejects_input(expression: str) -> None:
    with pytest.raises(ToolArgumentsError):
        calculate(expression)


@pytest.mark.parametrize("expression", ["1 / 0", "9 ** 999", "1e999", "10 ** 200", "(-8) ** 0.5"])
def test_calculator_refuses_unsafe_results(expression: str) -> None:
    with pytest.raises(ToolExecutionError):
        calculate(expression)


async def test_calculator_tool() -> None:
    tool = CalculatorTool()
    assert isinstance(tool, Tool)
    assert tool.read_only
    assert await tool.call({"expression": "2 + 3"}) == "5"
    with pytest.raises(ToolArgumentsError):
        await tool.call({})


# --- current_time -----------------------------------------------------------------------------


def fixed_clock() -> datetime:
    return datetime(2026, 11, 23, 22, 12, 3, 456, tzinfo=UTC)


async def test_current_time_valid_zone() -> None:
    tool = CurrentTimeTool(clock=fixed_clock)
    assert isinstance(tool, Tool)
    assert tool.read_only
    assert await tool.call({"timezone": "Asia/Tokyo"}) == "2026-11-24T07:12:03+09:00 (JST)"
    assert await tool.call({"timezone": "UTC"}) == "2026-11-23T22:12:03+00:00 (UTC)"


async def test_current_time_real_clock_is_recent() -> None:
    text = await CurrentTimeTool().call({"timezone": "Europe/London"})
    stamp = datetime.fromisoformat(text.split(" ")[0])
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Asia", "../etc/passwd", "/etc/passwd", " "])
async def test_current_time_invalid_zone(zone: str) -> None:
    with pytest.raises(ToolArgumentsError, match=r"unknown time zone|non-empty"):
        await CurrentTimeTool(clock=fixed_clock).call({"timezone": zone})


# --- errors -----------------------------------------------------------------------------------


def test_error_codes() -> None:
    codes = {
        ToolNotFoundError: "TOOL_NOT_FOUND",
        ToolArgumentsError: "TOOL_INVALID_ARGUMENTS",
        ToolDeniedError: "TOOL_ACCESS_DENIED",
        ToolTimeoutError: "TOOL_TIMEOUT",
        ToolExecutionError: "TOOL_FAILED",
        DuplicateToolError: "TOOL_DUPLICATE",
    }
    for cls, code in codes.items():
        assert issubclass(cls, ToolError)
        assert issubclass(cls, AgentStreamError)
        assert cls.code == code
        assert cls.retriable is (cls is ToolTimeoutError)


# --- registry ---------------------------------------------------------------------------------


def test_default_registry() -> None:
    registry = default_registry()
    assert isinstance(registry, ToolExecutor)
    assert registry.names() == ["calculator", "current_time"]
    assert registry.has("calculator")
    assert not registry.has("nope")
    assert registry.read_only("current_time")
    assert not registry.read_only("nope")
    assert [s.name for s in registry.specs(["current_time", "nope"])] == ["current_time"]
    assert [s.name for s in registry.specs()] == ["calculator", "current_time"]
    assert registry.specs([]) == []


def test_duplicate_policy() -> None:
    registry = ToolRegistry([CountingTool()])
    with pytest.raises(DuplicateToolError):
        registry.register(CountingTool())
    replacement = CountingTool()
    registry.register(replacement, replace=True)
    assert registry.get("echo") is replacement
    with pytest.raises(ToolNotFoundError):
        registry.get("nope")


def test_invalid_schema_refused_at_registration() -> None:
    class BadSchema(CountingTool):
        @property
        def spec(self) -> ToolSpec:
            return ToolSpec(name="bad", description="", input_schema={"type": 12})

    with pytest.raises(ToolError, match="invalid input schema"):
        ToolRegistry().register(BadSchema())


async def test_execute_success() -> None:
    tool = CountingTool()
    outcome = await ToolRegistry([tool]).execute("echo", {"text": "hi"}, timeout_s=1)
    assert not outcome.is_error
    assert outcome.content == "HI"
    assert outcome.error_code is None
    assert outcome.duration_ms >= 0
    outcome = await default_registry().execute("calculator", {"expression": "2+3"}, timeout_s=1)
    assert outcome.content == "5"


async def test_unknown_tool() -> None:
    outcome = await default_registry().execute("nope", {}, timeout_s=1)
    assert outcome.is_error
    assert outcome.error_code == "TOOL_NOT_FOUND"
    assert "nope" in outcome.content


@pytest.mark.parametrize(
    "arguments",
    [{}, {"text": 5}, {"text": "hi", "extra": 1}],
)
async def test_invalid_arguments_never_reach_the_tool(arguments: dict[str, Any]) -> None:
    tool = CountingTool()
    outcome = await ToolRegistry([tool]).execute("echo", arguments, timeout_s=1)
    assert outcome.is_error
    assert outcome.error_code == "TOOL_INVALID_ARGUMENTS"
    assert "echo" in outcome.content
    assert tool.calls == 0


async def test_invalid_argument_message_does_not_echo_values() -> None:
    outcome = await ToolRegistry([CountingTool()]).execute(
        "echo", {"text": ["secret-value"]}, timeout_s=1
    )
    assert outcome.error_code == "TOOL_INVALID_ARGUMENTS"
    assert "secret-value" not in outcome.content
    assert "text" in outcome.content


async def test_timeout_outcome() -> None:
    tool = CountingTool(block=True)
    outcome = await ToolRegistry([tool]).execute("echo", {"text": "hi"}, timeout_s=0.01)
    assert outcome.is_error
    assert outcome.error_code == "TOOL_TIMEOUT"
    assert tool.calls == 1


async def test_tool_error_keeps_its_code() -> None:
    outcome = await default_registry().execute("calculator", {"expression": "1/0"}, timeout_s=1)
    assert outcome.is_error
    assert outcome.error_code == "TOOL_FAILED"
    assert outcome.content == "Error: division by zero"
    outcome = await default_registry().execute("calculator", {"expression": "x"}, timeout_s=1)
    assert outcome.error_code == "TOOL_INVALID_ARGUMENTS"


async def test_failing_tool_does_not_disturb_concurrent_sibling() -> None:
    registry = ToolRegistry([CountingTool("bad", fail=True), CountingTool("good")])
    bad, good = await asyncio.gather(
        registry.execute("bad", {"text": "x"}, timeout_s=1),
        registry.execute("good", {"text": "ok"}, timeout_s=1),
    )
    assert bad.is_error
    assert bad.error_code == "TOOL_FAILED"
    assert "boom" in bad.content
    assert not good.is_error
    assert good.content == "OK"
