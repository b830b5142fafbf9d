"""Cancellation end to end on the real broker and Redis (issue 12, item 2).

A cancel during a slow model call ends the request CANCELLED and frees its session; a cancel of
a finished or unknown request is reported as a no-op; a cancel reaches a request waiting in a
retry tier; a side-effecting tool call that runs finishes and is journaled while the calls not
started are skipped.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.cancel_client import CancelOutcome
from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult, ToolSpec
from agentstream.llm.exceptions import LLMUnavailableError
from agentstream.llm.local import LocalRuleModel
from agentstream.observability import metrics
from agentstream.state.journal import tool_step_id
from agentstream.state.keys import Keys
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.testing import tool_call
from agentstream.tools.registry import ToolRegistry
from tests.support.kafka import FAST_KAFKA
from tests.support.redis import connect
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration


class SlowModel(LocalRuleModel):
    """The local model, except: "slow" waits (until cancelled), "down" is a provider outage,
    "tools" asks for three calls of the side-effecting tool ``charge`` (then answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_calls = 0
        self.aborted = 0
        self.down_calls = 0

    async def complete(self, request: LLMRequest) -> LLMResult:
        text = [m.content for m in request.messages if m.role == "user"][-1]
        if "slow" in text:
            self.slow_calls += 1
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.aborted += 1
                raise
        if "down" in text:
            self.down_calls += 1
            raise LLMUnavailableError("provider down (test)")
        if "tools" in text and request.messages[-1].role == "user":
            return LLMResult(
                content="",
                tool_calls=tuple(
                    tool_call("charge", {"n": n}, call_id=f"c{n}").tool_calls[0] for n in range(3)
                ),
            )
        return await super().complete(request)


class ChargeTool:
    """A side-effecting tool whose calls take a while; records the calls that began and ended."""

    spec = ToolSpec(
        name="charge",
        description="Charge a card (test).",
        input_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    read_only = False

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[int] = []

    async def call(self, arguments: dict[str, Any]) -> str:
        n = int(arguments["n"])
        self.started.append(n)
        await asyncio.sleep(1.5)
        self.finished.append(n)
        return f"charged {n}"


async def _settings(settings_factory: Any, **overrides: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA, **overrides)
    await ensure_topics(s)
    return s


async def test_cancel_during_a_slow_model_call_ends_cancelled_and_frees_the_session(
    settings_factory: Any,
) -> None:
    settings = await _settings(settings_factory)
    model = SlowModel()
    async with PipelineWorker(settings, llm=model), AgentClient(settings) as client:
        request = new_request("slow please", session_id="s1", user_id="u", tenant_id="t")
        answer = client.expect(request["request_id"])
        await client.submit(request)
        await wait_until(lambda: model.slow_calls == 1, what="the slow model call")
        # a request this client sent: its tenant and session are known
        result = await client.cancel(request["request_id"], requested_by="u", reason="stop")
        assert result.outcome is CancelOutcome.CANCELLED, result
        response = await asyncio.wait_for(answer, 5)
        assert response.state == "CANCELLED"
        assert response.error_code == "CANCELLED"
        assert response.metadata["cancelled_by"] == "u"
        assert response.metadata["cancel_reason"] == "stop"
        assert model.aborted == 1  # the model call was stopped, not left to finish
        # the session is free: the next request of the session is answered
        following = await client.ask("hello", session_id="s1", user_id="u", tenant_id="t")
        assert following.state == "COMPLETED"
    assert result.seconds < 5


async def test_cancel_of_a_finished_or_unknown_request_is_a_reported_no_op(
    settings_factory: Any,
) -> None:
    settings = await _settings(settings_factory)
    before = {f: metrics.CANCEL_REQUESTS.labels(f)._value.get() for f in ("finished", "unknown")}
    async with PipelineWorker(settings, llm=SlowModel()), AgentClient(settings) as client:
        done = await client.ask("hello", session_id="s2", user_id="u", tenant_id="t")
        assert done.state == "COMPLETED"
        # the CLI's case: the cancel names no session; the pipeline finds it
        finished = await client.cancel(done.request_id, tenant_id="t", wait=10)
        unknown = await client.cancel("no-such-request", tenant_id="t", wait=10)
    assert finished.outcome is CancelOutcome.FINISHED, finished
    assert unknown.outcome is CancelOutcome.UNKNOWN, unknown
    after = {f: metrics.CANCEL_REQUESTS.labels(f)._value.get() for f in ("finished", "unknown")}
    assert after == {f: before[f] + 1 for f in before}


async def test_cancel_reaches_a_request_waiting_in_a_retry_tier(settings_factory: Any) -> None:
    # one 60 s tier: without the cancel the turn would wait there a minute
    settings = await _settings(settings_factory, topics={"retry_tiers_s": [60.0]})
    model = SlowModel()
    worker = PipelineWorker(settings, llm=model)
    async with worker, AgentClient(settings) as client:
        request = new_request("down again", session_id="s3", user_id="u", tenant_id="t")
        answer = client.expect(request["request_id"])
        await client.submit(request)
        retry = worker.runners["retry"]
        await wait_until(lambda: retry.in_flight == 1, what="a held retry record")
        result = await client.cancel(request["request_id"], tenant_id="t", wait=10)
        assert result.outcome is CancelOutcome.CANCELLED, result
        response = await asyncio.wait_for(answer, 5)
        assert response.state == "CANCELLED"
        assert model.down_calls == 1  # sent back early, and not run again
        following = await client.ask("hello", session_id="s3", user_id="u", tenant_id="t")
        assert following.state == "COMPLETED"


async def test_running_side_effecting_call_finishes_and_is_journaled_others_skipped(
    settings_factory: Any,
) -> None:
    settings = await _settings(settings_factory, limits={"tool_concurrency": 1})
    tool = ChargeTool()
    registry = ToolRegistry()
    registry.register(tool)
    async with (
        PipelineWorker(settings, llm=SlowModel(), tools=registry),
        AgentClient(settings) as client,
    ):
        request = new_request(
            "tools please",
            session_id="s4",
            user_id="u",
            tenant_id="t",
            allowed_tools=["charge"],
        )
        answer = client.expect(request["request_id"])
        await client.submit(request)
        await wait_until(lambda: tool.started == [0], what="the first charge")
        result = await client.cancel(request["request_id"], tenant_id="t", wait=10)
        assert result.outcome is CancelOutcome.CANCELLED, result
        response = await asyncio.wait_for(answer, 5)
    assert response.state == "CANCELLED"
    assert tool.started == [0]  # calls 1 and 2 never began
    assert tool.finished == [0]  # call 0 ran to its end
    calls = {c["call_id"]: c for c in response.tool_calls}
    assert calls["c0"]["is_error"] is False
    assert calls["c1"]["error_code"] == calls["c2"]["error_code"] == "CANCELLED"
    redis = connect(settings.redis_url or "")
    try:
        step = Keys(settings.state.key_prefix).step(
            "t", "s4", tool_step_id(request["request_id"], 0, 0)
        )
        assert await redis.hget(step, "status") in (b"done", "done")
    finally:
        await redis.aclose()


async def test_cancel_of_a_request_queued_behind_another_leaves_the_other_running(
    settings_factory: Any,
) -> None:
    settings = await _settings(settings_factory)
    model = SlowModel()
    worker = PipelineWorker(settings, llm=model)
    async with worker, AgentClient(settings) as client:
        first = new_request("slow first", session_id="s5", user_id="u", tenant_id="t")
        first_answer = client.expect(first["request_id"])
        await client.submit(first)
        await wait_until(lambda: model.slow_calls == 1, what="the first request's model call")
        queued = new_request("hello", session_id="s5", user_id="u", tenant_id="t")
        queued_answer = client.expect(queued["request_id"])
        await client.submit(queued)
        validation = worker.runners["validation"]
        await wait_until(lambda: validation.in_flight == 1, what="the queued request waiting")
        result = await client.cancel(queued["request_id"], tenant_id="t", wait=10)
        assert result.outcome is CancelOutcome.CANCELLED, result
        assert (await asyncio.wait_for(queued_answer, 5)).state == "CANCELLED"
        # the first request still holds the session and its model call still runs
        assert model.aborted == 0
        assert not first_answer.done()
        result = await client.cancel(first["request_id"], tenant_id="t", wait=10)
        assert result.outcome is CancelOutcome.CANCELLED, result
        assert (await asyncio.wait_for(first_answer, 5)).state == "CANCELLED"
        following = await client.ask("hello", session_id="s5", user_id="u", tenant_id="t")
        assert following.state == "COMPLETED"


async def test_a_worker_started_after_the_cancel_ends_the_request_it_is_redelivered(
    settings_factory: Any,
) -> None:
    # the cancel is sent while no worker runs; the next worker reads it at start and does not
    # hold the request's redelivered retry record for its 60 s
    settings = await _settings(settings_factory, topics={"retry_tiers_s": [60.0]})
    model = SlowModel()
    async with AgentClient(settings) as client:
        request = new_request("down again", session_id="s6", user_id="u", tenant_id="t")
        answer = client.expect(request["request_id"])
        first = PipelineWorker(settings, llm=model)
        async with first:
            await client.submit(request)
            retry = first.runners["retry"]
            await wait_until(lambda: retry.in_flight == 1, what="a held retry record")
        sent = await client.cancel(request["request_id"], tenant_id="t", wait=0)
        assert sent.outcome is CancelOutcome.NOT_SEEN
        started = asyncio.get_running_loop().time()
        async with PipelineWorker(settings, llm=model):
            response = await asyncio.wait_for(answer, 30)
        assert response.state == "CANCELLED"
        assert asyncio.get_running_loop().time() - started < 30
        assert model.down_calls == 1
