"""Retry-topic delay accuracy: how late a retried record is sent back, measured against its due
time. Every request's first model call fails (transiently), so each goes through the first tier.

    .venv/bin/python bench/retry_delay.py [--requests 300] [--tier 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter

from _harness import bench_settings, percentile

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import DevStack
from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.llm.exceptions import LLMUnavailableError
from agentstream.llm.local import LocalRuleModel
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker


class FailsOnce(LocalRuleModel):
    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    async def complete(self, request: LLMRequest) -> LLMResult:
        text = [m.content for m in request.messages if m.role == "user"][-1]
        self.seen[text] += 1
        if self.seen[text] == 1:
            raise LLMUnavailableError("transient (bench)")
        return await super().complete(request)


async def run(requests: int, tier: float) -> None:
    async with DevStack(Settings(kafka_bootstrap_servers=None, redis_url=None)) as live:
        settings = bench_settings(live)
        settings = settings.model_copy(
            update={"topics": settings.topics.model_copy(update={"retry_tiers_s": [tier]})}
        )
        await ensure_topics(settings)
        async with (
            PipelineWorker(settings, llm=FailsOnce()) as worker,
            AgentClient(settings) as client,
        ):
            batch = [
                new_request(f"hello {i}", session_id=f"s{i}", user_id="u", tenant_id="t")
                for i in range(requests)
            ]
            start = time.perf_counter()
            answers = await asyncio.gather(*(client.request(r, timeout=120) for r in batch))
            elapsed = time.perf_counter() - start
            late = list(worker.retry_forwarder.lateness_ms)
    assert all(a.ok for a in answers)
    print(f"requests retried once   {requests} (tier {tier:g} s)")
    print(f"all answered in         {elapsed:.2f} s")
    print(f"lateness p50 (actual-due) {percentile(late, 0.5):7.1f} ms")
    print(f"lateness p99              {percentile(late, 0.99):7.1f} ms")
    print(f"lateness max              {max(late):7.1f} ms")
    print(f"early (negative)          {sum(1 for x in late if x < 0)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--tier", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.tier))


if __name__ == "__main__":
    main()
