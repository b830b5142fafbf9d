"""A failing tool server's circuit breaker, shared through the real Redis: once open, calls to
that server fail fast without reaching it; other servers and built-ins are unaffected."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.llm.base import ToolSpec
from agentstream.resilience.breaker import BreakerConfig, BreakerRegistry
from agentstream.tools.builtin import builtin_tools
from agentstream.tools.exceptions import ToolUnavailableError
from agentstream.tools.executor import PolicyExecutor
from agentstream.tools.registry import ToolRegistry
from tests.support.redis import connect

pytestmark = pytest.mark.integration


class DownTool:
    """Stands for a tool on a server whose connection keeps breaking."""

    def __init__(self) -> None:
        self.calls = 0

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(
            name="down.op",
            description="always unavailable",
            input_schema={"type": "object", "properties": {}},
        )

    @property
    def read_only(self) -> bool:
        return True

    async def call(self, arguments: dict[str, Any]) -> str:
        self.calls += 1
        raise ToolUnavailableError("connection reset (test)")


async def test_open_breaker_fails_fast_and_is_shared(redis_url: str, unique_prefix: str) -> None:
    down = DownTool()
    redis = connect(redis_url)
    config = BreakerConfig(failure_threshold=3, recovery_timeout_s=60)

    def executor() -> PolicyExecutor:  # one per "worker", sharing Redis
        registry = ToolRegistry([*builtin_tools(), down])
        return PolicyExecutor(
            registry, breakers=BreakerRegistry(redis, config, namespace=unique_prefix)
        )

    first, second = executor(), executor()
    for _ in range(3):
        outcome = await first.execute("down.op", {}, timeout_s=1)
        assert outcome.error_code == "TOOL_UNAVAILABLE"
    assert down.calls == 3
    refused = await second.execute("down.op", {}, timeout_s=1)  # the other worker
    assert refused.error_code == "TOOL_UNAVAILABLE"
    assert "circuit open" in refused.content
    assert down.calls == 3  # never reached the server
    ok = await second.execute("calculator", {"expression": "2+3"}, timeout_s=1)
    assert ok.content == "5"
    await redis.aclose()
