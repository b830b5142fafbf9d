"""Recovery strategies and degradation switches, end to end on the real broker and Redis."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.llm.exceptions import (
    LLMBadRequestError,
    LLMRateLimitedError,
    LLMTimeoutError,
)
from agentstream.llm.local import LocalRuleModel
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.tools.registry import default_registry
from tests.support.kafka import FAST_KAFKA

pytestmark = pytest.mark.integration


class ScriptedModel(LocalRuleModel):
    """The local model, except for messages that name a failure mode."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMResult:
        self.requests.append(request)
        text = [m.content for m in request.messages if m.role == "user"][-1]
        if "slow-on-full-context" in text and request.max_tokens >= 1024:
            raise LLMTimeoutError("no answer in time (test)")
        if "rate-limited" in text:
            raise LLMRateLimitedError("429 (test)", retry_after_s=7.0)
        if "bad-request" in text:
            raise LLMBadRequestError("400 (test)")
        if "tool-then-fail" in text and request.messages[-1].role == "tool":
            raise LLMBadRequestError("cannot continue (test)")
        if "tool-then-fail" in text:
            return await super().complete(
                LLMRequest(
                    messages=(
                        *request.messages[:-1],
                        request.messages[-1].__class__(role="user", content="calculate 1/0"),
                    ),
                    tools=request.tools,
                )
            )
        return await super().complete(request)


async def _settings(settings_factory: Any, **overrides: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA, **overrides)
    await ensure_topics(s)
    return s


async def test_llm_timeout_retries_with_simplified_context_and_marks_degraded(
    settings_factory: Any,
) -> None:
    settings = await _settings(settings_factory)
    model = ScriptedModel()
    async with PipelineWorker(settings, llm=model), AgentClient(settings) as client:
        answer = await client.ask(
            "slow-on-full-context hello", session_id="s", user_id="u", tenant_id="t"
        )
    assert answer.state == "COMPLETED"
    assert answer.confidence < 1.0
    assert answer.metadata["degraded"] == "true"
    assert answer.metadata["degraded_reason"] == "simplified-context:LLM_TIMEOUT"
    assert [r.max_tokens for r in model.requests] == [1024, 256]


async def test_rate_limited_bad_request_and_tool_failure_outcomes(settings_factory: Any) -> None:
    settings = await _settings(settings_factory)
    async with PipelineWorker(settings, llm=ScriptedModel()), AgentClient(settings) as client:
        limited = await client.ask("rate-limited", session_id="a", user_id="u", tenant_id="t")
        bad = await client.ask("bad-request", session_id="b", user_id="u", tenant_id="t")
        tool = await client.ask("tool-then-fail", session_id="c", user_id="u", tenant_id="t")
    assert limited.state == "ERROR"
    assert limited.error_code == "RATE_LIMITED"
    assert limited.metadata["retry_after_s"] == "7"
    assert "7 s" in limited.content
    assert bad.error_code == "LLM_BAD_REQUEST"
    assert "could not answer" in bad.content
    # the model got the tool's error as its result, then failed too: a guidance response
    assert tool.state == "ERROR"
    assert tool.tool_calls[0]["is_error"]
    assert "calculator" in tool.content
    assert "try again later" in tool.content


async def test_load_shedding_answers_resource_exhausted(settings_factory: Any) -> None:
    settings = await _settings(settings_factory, limits={"shed_rss_mb": 1})
    async with PipelineWorker(settings), AgentClient(settings) as client:
        answer = await client.ask("hello", session_id="s", user_id="u", tenant_id="t")
    assert answer.state == "ERROR"
    assert answer.error_code == "RESOURCE_EXHAUSTED"
    assert answer.metadata["retry_after_s"] == "5"


async def test_degradation_switches(settings_factory: Any) -> None:
    settings = await _settings(
        settings_factory, degradation={"disable_tools": True, "cached_only": False}
    )
    model = ScriptedModel()
    async with (
        PipelineWorker(settings, llm=model, tools=default_registry()),
        AgentClient(settings) as client,
    ):
        answer = await client.ask("add 2 and 3", session_id="s", user_id="u", tenant_id="t")
    assert model.requests[0].tools == ()  # no tools offered
    assert answer.tool_calls == []
    assert answer.state == "COMPLETED"

    cached_only = await _settings(settings_factory, degradation={"cached_only": True})
    async with PipelineWorker(cached_only), AgentClient(cached_only) as client:
        miss = await client.ask("hello there", session_id="x", user_id="u", tenant_id="t")
    assert miss.error_code == "SERVICE_DEGRADED"
