"""The per-worker cancel registry (processors/cancellation.py), without a broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.processors.cancellation import Cancellations, CancelNotice, RequestCancelled
from agentstream.schemas.contracts import AgentRequest, AgentState
from agentstream.testing import FunctionModel, TestPipeline


def _notice(request_id: str = "r1") -> CancelNotice:
    return CancelNotice(request_id=request_id, cancel_id="c1", requested_by="u", reason="stop")


async def test_a_cancel_stops_the_running_body_with_request_cancelled() -> None:
    cancels = Cancellations()
    entered = asyncio.Event()

    async def body() -> tuple[CancelNotice, int]:
        try:
            async with cancels.abortable("r1"):
                entered.set()
                await asyncio.sleep(60)
        except RequestCancelled as cancelled:
            task = asyncio.current_task()
            assert task is not None
            await asyncio.sleep(0)  # the task goes on: the cancel was taken back (uncancel)
            return cancelled.notice, task.cancelling()
        raise AssertionError("not stopped")

    task = asyncio.create_task(body())
    await entered.wait()
    assert cancels.running("r1")
    assert cancels.cancel(_notice()) == 1
    notice, cancelling = await asyncio.wait_for(task, 5)
    assert notice.reason == "stop"
    assert cancelling == 0
    assert not cancels.running("r1")


async def test_other_requests_and_their_own_timeouts_are_untouched() -> None:
    cancels = Cancellations()
    cancels.cancel(_notice("other"))
    async with cancels.abortable("r1"):
        await asyncio.sleep(0)
    with pytest.raises(TimeoutError):  # the body's own timeout is not taken for a cancel
        async with cancels.abortable("r1"), asyncio.timeout(0.01):
            await asyncio.sleep(1)


async def test_a_cancelled_request_is_refused_at_the_next_boundary_until_the_window_ends() -> None:
    cancels = Cancellations(window_s=0.05)
    cancels.cancel(_notice())
    with pytest.raises(RequestCancelled):
        cancels.check("r1")
    with pytest.raises(RequestCancelled):
        async with cancels.abortable("r1"):
            pass
    await asyncio.sleep(0.06)
    cancels.check("r1")  # forgotten after the window
    assert cancels.notice("r1") is None


def test_the_memory_is_bounded() -> None:
    cancels = Cancellations(max_remembered=2)
    for n in range(3):
        cancels.cancel(_notice(f"r{n}"))
    assert cancels.notice("r0") is None
    assert cancels.notice("r2") is not None


async def test_test_pipeline_cancel_stops_a_slow_model_call() -> None:
    started = asyncio.Event()

    async def slow(request: LLMRequest) -> LLMResult:
        started.set()
        await asyncio.sleep(60)
        return LLMResult(content="too late")

    async with TestPipeline(llm=FunctionModel(slow)) as pipeline:
        answer = asyncio.create_task(pipeline.ask("hello", request_id="r-slow"))
        await asyncio.wait_for(started.wait(), 10)
        assert pipeline.cancel("r-slow", reason="stop") == 1
        response = await asyncio.wait_for(answer, 10)
    assert response.state is AgentState.CANCELLED
    assert response.error_code == "CANCELLED"
    assert response.metadata["cancel_reason"] == "stop"


async def test_the_request_after_a_new_session_s_cancelled_first_request_starts_it() -> None:
    """A request cancelled before validation took it never claimed its session (a new one has
    no hash yet): its CANCELLED answer is recorded all the same, so the request that follows
    that answer starts the session instead of being refused CONTEXT_LOST."""
    async with TestPipeline() as pipeline:
        assert pipeline.cancel("r-first") == 0  # nothing running yet: ends at the boundary
        cancelled = await pipeline.ask("hello", session_id="new", request_id="r-first")
        follows = AgentRequest(
            request_id="r-next",
            session_id="new",
            user_id="user-1",
            tenant_id="tenant-1",
            message="hello again",
            previous_response_id=cancelled.response_id,
            created_at=datetime.now(UTC),
        )
        answer = await pipeline.send(follows)
    assert cancelled.state is AgentState.CANCELLED
    assert (answer.state, answer.error_code) == (AgentState.COMPLETED, None)
