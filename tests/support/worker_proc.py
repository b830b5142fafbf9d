"""A pipeline worker process for crash tests, with test doubles that record into Redis.

Run as ``python -m tests.support.worker_proc``; settings come from AGENTSTREAM_* variables.

- ``CountingModel``: the local rule model, plus: every call increments
  ``<prefix>:test:llm:<request_id>``; a user message containing ``[slow]`` sleeps
  TEST_SLOW_S seconds first; ``[count N]`` asks for N calls of the ``counter`` tool (the last
  one holding 60 s); ``[tick]`` asks for one call of it that returns at once; a message
  starting ``[delegate NAME] rest`` calls the agent tool ``agent.NAME`` with message ``rest``.
- ``CounterTool``: a side-effecting tool (no idempotency key): each execution increments
  ``<prefix>:test:counter`` and records the call index, then holds for ``hold`` seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from typing import Any

from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult, ToolCall, ToolSpec, Usage
from agentstream.llm.local import LocalRuleModel
from agentstream.observability.logging import configure_logging
from agentstream.streams.app import PipelineWorker
from agentstream.tools.registry import default_registry
from tests.support.redis import RedisClient, connect

COUNT = re.compile(r"\[count (\d+)\]")
DELEGATE = re.compile(r"^\s*\[delegate ([\w.-]+)\]\s*(.*)$", re.DOTALL)


class CountingModel(LocalRuleModel):
    def __init__(self, redis: RedisClient, prefix: str, slow_s: float) -> None:
        super().__init__()
        self._redis = redis
        self._prefix = prefix
        self._slow_s = slow_s

    async def complete(self, request: LLMRequest) -> LLMResult:
        users = [m for m in request.messages if m.role == "user"]
        last = users[-1].content if users else ""
        request_id = request.metadata.get("rid", "unknown")
        await self._redis.incr(f"{self._prefix}:test:llm:{request_id}")
        delegate = DELEGATE.match(last)
        if delegate and request.messages[-1].role == "user":
            name, message = delegate.groups()
            call = ToolCall(call_id="d0", name=f"agent.{name}", arguments={"message": message})
            return LLMResult(content="", tool_calls=(call,), usage=Usage(prompt_tokens=1))
        if "[slow]" in last and request.messages[-1].role == "user":
            await asyncio.sleep(self._slow_s)
        if "[tick]" in last and request.messages[-1].role == "user":
            call = ToolCall(call_id="t0", name="counter", arguments={"index": 0, "hold": 0.0})
            return LLMResult(content="", tool_calls=(call,), usage=Usage(prompt_tokens=1))
        match = COUNT.search(last)
        if match and request.messages[-1].role == "user":
            n = int(match.group(1))
            calls = tuple(
                ToolCall(
                    call_id=f"k{i}",
                    name="counter",
                    arguments={"index": i, "hold": 60.0 if i == n - 1 else 0.0},
                )
                for i in range(n)
            )
            return LLMResult(content="", tool_calls=calls, usage=Usage(prompt_tokens=1))
        return await super().complete(request)


class CounterTool:
    def __init__(self, redis: RedisClient, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(
            name="counter",
            description="Counts its executions (a side effect).",
            input_schema={
                "type": "object",
                "properties": {"index": {"type": "integer"}, "hold": {"type": "number"}},
                "required": ["index", "hold"],
            },
        )

    @property
    def read_only(self) -> bool:
        return False

    async def call(self, arguments: dict[str, Any]) -> str:
        await self._redis.incr(f"{self._prefix}:test:counter")
        await self._redis.rpush(f"{self._prefix}:test:counter:calls", arguments["index"])
        await asyncio.sleep(float(arguments["hold"]))
        return f"counted {arguments['index']}"


async def main() -> None:
    settings = Settings()
    configure_logging(settings)
    prefix = settings.state.key_prefix
    redis = connect(settings.redis_url or "")
    tools = default_registry()
    tools.register(CounterTool(redis, prefix))
    model = CountingModel(redis, prefix, float(os.environ.get("TEST_SLOW_S", "3")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with PipelineWorker(settings, llm=model, tools=tools):
        print("READY", flush=True)
        await stop.wait()
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
