"""Many sessions in flight per worker, strict order within each session."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

from agentstream.client import AgentClient, AgentResponse, new_request
from agentstream.config import Settings
from agentstream.llm.local import LocalRuleModel
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA

pytestmark = pytest.mark.integration


async def test_200_sessions_x_3_turns_keep_order_with_100_in_flight(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, limits={"max_in_flight": 100})
    await ensure_topics(settings)
    model = LocalRuleModel(latency_s=0.2)
    turns = 3
    plan = {
        f"s{n}": [
            new_request(f"add {n} and {t}", session_id=f"s{n}", user_id=f"u{n}", tenant_id="t")
            for t in range(turns)
        ]
        for n in range(200)
    }
    received: dict[str, list[AgentResponse]] = defaultdict(list)
    async with PipelineWorker(settings, llm=model) as worker, AgentClient(settings) as client:
        done = asyncio.Event()

        async def collect() -> None:
            count = 0
            async for response in client.responses():
                received[response.session_id].append(response)
                count += 1
                if count == 200 * turns:
                    done.set()
                    return

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)
        for t in range(turns):  # interleaved: every session's first turn, then second, ...
            for session in plan:
                await client.submit(plan[session][t])
        await asyncio.wait_for(done.wait(), timeout=120)
        await collector
        peak = worker.runners["generation"].stats.peak_in_flight
    for session, requests in plan.items():
        got = received[session]
        assert [r.request_id for r in got] == [q["request_id"] for q in requests], session
        n = int(session[1:])
        assert [r.content for r in got] == [f"The answer is {n + t}." for t in range(turns)]
    # slow model calls overlapped across sessions, bounded by the in-flight limit
    assert 50 <= peak <= 100


async def test_double_text_reject_policy_answers_the_second_request_busy(
    settings_factory: Any,
) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, limits={"double_text": "reject"})
    await ensure_topics(settings)
    model = LocalRuleModel(latency_s=1.0)
    async with PipelineWorker(settings, llm=model), AgentClient(settings) as client:
        first = new_request("add 1 and 2", session_id="dt", user_id="u", tenant_id="t")
        second = new_request("add 3 and 4", session_id="dt", user_id="u", tenant_id="t")
        f1 = client.expect(first["request_id"])
        f2 = client.expect(second["request_id"])
        await client.submit(first)
        await client.submit(second)
        busy = await asyncio.wait_for(f2, 30)
        done = await asyncio.wait_for(f1, 30)
        later = await client.ask("add 5 and 6", session_id="dt", user_id="u", tenant_id="t")
    assert busy.state == "ERROR"
    assert busy.error_code == "SESSION_BUSY"
    assert done.content == "The answer is 3."
    assert later.content == "The answer is 11."
