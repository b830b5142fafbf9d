"""Usage is never dropped (issue 18): a starved Redis pool delays booking, it does not lose it.

Real Redis: the admission client gets one connection and a 50 ms store timeout, and a hog holds
that connection with blocking pops while 300 model calls settle. Every call's tokens and cost end
up in the tenant's day totals, and fewer round trips than calls were used (written behind in
batches)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from agentstream.admission import Admission, admitted_llm_call
from agentstream.config import Settings
from agentstream.llm.base import Usage
from agentstream.state.context import ContextStore
from agentstream.state.keys import Keys
from agentstream.state.redis import redis_from_url
from agentstream.tools.registry import default_registry
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

CALLS = 300


async def test_usage_booked_in_full_while_the_pool_is_starved(
    redis_url: str, unique_prefix: str
) -> None:
    settings = Settings(
        redis_url=redis_url,
        state={"key_prefix": unique_prefix},
        admission={"redis_timeout_s": 0.05, "usage_flush_s": 0.02},
    )
    redis: Any = redis_from_url(redis_url, max_connections=1, pool_timeout_s=5)
    admission = Admission(
        redis,
        settings,
        contexts=ContextStore(redis, Keys(unique_prefix), ttl_s=60),
        tools=default_registry(),
    )
    stop = asyncio.Event()

    async def hog() -> None:  # holds the only connection most of the time
        while not stop.is_set():
            await redis.blpop([f"{unique_prefix}:nothing"], timeout=0.2)

    async def call(i: int) -> None:
        async with admitted_llm_call(
            admission, tenant_id="acme", user_id=f"u{i % 7}", call_id=f"r{i}:t0:llm", history=[]
        ) as grant:
            grant.record(Usage(prompt_tokens=10 + i % 5, completion_tokens=5, cost_usd=0.001))

    hogging = asyncio.create_task(hog())
    try:
        await asyncio.gather(*(call(i) for i in range(CALLS)))
        await wait_until(lambda: admission.usage_writer.failed_batches > 0, "a starved flush")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await hogging
    writer = admission.usage_writer
    await wait_until(lambda: writer.pending == 0, "everything booked", deadline_s=30)
    usage = await admission.usage("acme")
    assert usage.tokens == sum(10 + i % 5 + 5 for i in range(CALLS))
    assert usage.cost_usd == pytest.approx(CALLS * 0.001)
    assert writer.booked == CALLS
    await admission.aclose()
    await redis.aclose()
