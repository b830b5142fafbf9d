"""Tiered retry topics on the real broker: transient model failures are retried later without
blocking other sessions; past the last tier the turn is dead-lettered and the session freed."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.llm.exceptions import LLMUnavailableError
from agentstream.llm.local import LocalRuleModel
from agentstream.schemas import dead_letter as dlq
from agentstream.schemas.codec import AvroCodec
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader

pytestmark = pytest.mark.integration


class FlakyModel(LocalRuleModel):
    """Fails the first ``failures`` calls of every message containing ``flaky``."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.seen: Counter[str] = Counter()
        self.call_times: dict[str, list[float]] = {}

    async def complete(self, request: LLMRequest) -> LLMResult:
        text = [m.content for m in request.messages if m.role == "user"][-1]
        self.call_times.setdefault(text, []).append(time.monotonic())
        if "flaky" in text:
            self.seen[text] += 1
            if self.seen[text] <= self.failures:
                raise LLMUnavailableError("provider down (test)")
        return await super().complete(request)


@pytest.fixture
async def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA, topics={"retry_tiers_s": [0.5, 1.0]})
    await ensure_topics(s)
    return s


async def test_transient_failure_is_retried_through_the_tiers(settings: Settings) -> None:
    model = FlakyModel(failures=2)
    codec = AvroCodec()
    async with (
        PipelineWorker(settings, llm=model) as worker,
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.errors, codec, "ErrorEvent") as errors,
    ):
        flaky = asyncio.create_task(
            client.ask("flaky: add 2 and 3", session_id="f", user_id="u", tenant_id="t")
        )
        # other sessions are not held behind the retried one
        other = await client.ask("add 1 and 1", session_id="o", user_id="u", tenant_id="t")
        assert other.content == "The answer is 2."
        assert not flaky.done()
        answer = await asyncio.wait_for(flaky, 30)
        lateness = worker.retry_forwarder.lateness_ms
    assert answer.state == "COMPLETED"
    assert answer.content == "The answer is 5."
    times = model.call_times["flaky: add 2 and 3"]
    # first call, then the 0.5 s tier, then the 1.0 s tier (then the tool turn)
    assert times[1] - times[0] >= 0.5
    assert times[2] - times[1] >= 1.0
    retried = [e for e in errors.values if e["code"] == "LLM_UNAVAILABLE"]
    assert [e["attempt"] for e in retried] == [1, 2]
    assert all(e["retriable"] for e in retried)
    assert len(lateness) == 2
    assert all(0 <= late < 500 for late in lateness)


async def test_retries_used_up_go_to_the_dlq_and_free_the_session(settings: Settings) -> None:
    model = FlakyModel(failures=100)
    async with (
        PipelineWorker(settings, llm=model),
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.dlq(settings.topics.generation)) as dead,
    ):
        request = new_request("flaky forever", session_id="d", user_id="u", tenant_id="t")
        await client.submit(request)
        await dead.wait_for(lambda: len(dead.records) == 1, what="the dead-lettered turn")
        headers = dlq.header_map(list(dead.records[0].headers))
        assert headers[dlq.ERROR_CODE] == "LLM_UNAVAILABLE"
        assert headers[dlq.ORIGINAL_TOPIC] == settings.topics.generation
        assert headers[dlq.ATTEMPT] == "3"
        later = await client.ask("add 2 and 2", session_id="d", user_id="u", tenant_id="t")
        assert later.content == "The answer is 4."
    assert model.seen["flaky forever"] == 3
