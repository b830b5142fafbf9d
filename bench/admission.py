"""Cost of admission control on this machine, against a real Redis.

Prints, in microseconds per operation (sequential, one connection, each call awaited):
  * a Redis PING round trip (the floor any Redis-backed check pays);
  * one rate-limit check: the request check of the validation stage (user and tenant windows,
    one Lua call), the raw limiter call under it, and the check for an agent with windows and a
    daily budget of its own (same one Lua call, more keys);
  * the whole admission step per request: validation (rate limits + daily budget + cache
    lookup) and generation (token reservation before the LLM call, settlement after it, cache
    store of the final answer), for a request with one LLM call; and a cache hit.
Then the rate-limit check's throughput with 50 concurrent tasks on one connection.

    .venv/bin/python bench/admission.py [--requests 5000] [--redis-url redis://...]

Without --redis-url it starts an embedded redis-server on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _harness import percentile
from redis.asyncio import Redis

from agentstream.admission import Admission, admitted_llm_call
from agentstream.admission.limits import request_windows
from agentstream.agents import Agent
from agentstream.config import Settings
from agentstream.embedded import EmbeddedRedis
from agentstream.llm.base import Usage
from agentstream.schemas.contracts import AgentResponse, AgentState
from agentstream.schemas.contracts import Usage as ContractUsage
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.keys import Keys
from agentstream.tools.registry import default_registry

BIG = 10**12  # limits that never bite: the bench measures the checks, not refusals
LIMITS = {
    "user_requests": BIG,
    "tenant_requests": BIG,
    "user_tokens": BIG,
    "tenant_tokens": BIG,
    "daily_tokens": BIG,
    "daily_cost_usd": 1e9,
}


async def timed(n: int, step: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Microseconds of each of ``n`` sequential calls (after 200 warm-up calls)."""
    for i in range(200):
        await step(-1 - i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await step(i)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def report(name: str, samples: list[float]) -> None:
    mean = sum(samples) / len(samples)
    print(
        f"{name:<58} mean {mean:7.1f} us   p50 {percentile(samples, 0.5):7.1f}   "
        f"p99 {percentile(samples, 0.99):7.1f}"
    )


def response_record(request_id: str) -> AgentResponse:
    return AgentResponse(
        response_id=f"resp-{request_id}",
        request_id=request_id,
        session_id=f"s{request_id}",
        user_id="u",
        tenant_id="acme",
        content="The answer is 5.",
        tool_calls=[],
        state=AgentState.COMPLETED,
        confidence=1.0,
        execution_time_ms=12,
        usage=ContractUsage(prompt_tokens=40, completion_tokens=12, cost_usd=0.0001),
        metadata={"model": "local-rules"},
        created_at=datetime.now(UTC),
    )


async def run(url: str, n: int) -> None:
    prefix = f"bench{int(time.time())}"
    settings = Settings(
        redis_url=url,
        state={"key_prefix": prefix},
        admission={"defaults": LIMITS, "cache_enabled": True},
    )
    redis = Redis.from_url(url)
    contexts = ContextStore(redis, Keys(prefix), ttl_s=600)
    admission = Admission(redis, settings, contexts=contexts, tools=default_registry())
    limits = admission.limits.for_tenant("acme")
    windows = request_windows(admission.keys, limits, "acme", "u")
    history = [{"role": "user", "content": "add 2 and 3", "request_id": "r", "turn": 0}]
    print(f"Redis {url}; {n} sequential calls per line, one connection\n")

    report("Redis PING round trip", await timed(n, lambda i: redis.ping()))
    report(
        "rate-limit check: raw Lua call (user + tenant windows)",
        await timed(n, lambda i: admission.limiter.acquire([(w, 1) for w in windows], f"a{i}")),
    )
    report(
        "rate-limit check: admit_request (windows + daily budget)",
        await timed(
            n, lambda i: admission.admit_request(tenant_id="acme", user_id="u", request_id=f"b{i}")
        ),
    )
    agent = Agent(name="bench", instructions="x", limits=LIMITS)  # type: ignore[arg-type]
    report(
        "  the same, plus an agent's own windows and daily budget",
        await timed(
            n,
            lambda i: admission.admit_request(
                tenant_id="acme", user_id="u", request_id=f"g{i}", agent=agent
            ),
        ),
    )

    async def validation_step(i: int) -> None:
        denial, cached = await admission.admit(
            tenant_id="acme",
            user_id="u",
            session_id=f"s{i}",
            request_id=f"c{i}",
            message=f"question {i}",
            allowed_tools=["calculator"],
            metadata={},
        )
        assert denial is None
        assert cached is None

    async def generation_step(i: int) -> None:
        async with admitted_llm_call(
            admission, tenant_id="acme", user_id="u", call_id=f"c{i}:t0:llm", history=history
        ) as grant:
            grant.record(Usage(prompt_tokens=40, completion_tokens=12, cost_usd=0.0001))
        ctx = AgentContext(session_id=f"s{i}", user_id="u", tenant_id="acme")
        ctx.history = [{"role": "user", "content": f"question {i}", "request_id": f"c{i}"}]
        await admission.remember_answer(
            ctx=ctx,
            allowed_tools=["calculator"],
            metadata={},
            degraded=False,
            response=response_record(f"c{i}"),
        )

    validation = await timed(n, validation_step)
    generation = await timed(n, generation_step)
    report("admission at validation (limits + budget + cache miss)", validation)
    report("admission at generation (reserve + settle + cache store)", generation)
    report(
        "whole admission step per request (one LLM call)",
        [a + b for a, b in zip(validation, generation, strict=True)],
    )

    async def cache_hit(i: int) -> None:
        i = abs(i) % n
        _, cached = await admission.admit(
            tenant_id="acme",
            user_id="u",
            session_id=f"fresh{i}",
            request_id=f"h{i}",
            message=f"question {i}",
            allowed_tools=["calculator"],
            metadata={},
        )
        assert cached is not None

    report("cache hit at validation (limits + budget + hit)", await timed(n, cache_hit))

    tasks, per_task = 50, max(1, n // 50)

    async def worker(t: int) -> None:
        for i in range(per_task):
            await admission.admit_request(tenant_id="acme", user_id=f"u{t}", request_id=f"x{t}-{i}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(tasks)))
    rate = tasks * per_task / (time.perf_counter() - t0)
    print(f"\nrate-limit checks with {tasks} concurrent tasks, one connection: {rate:,.0f}/s")

    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        await redis.delete(key)
    await redis.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    if args.redis_url:
        await run(args.redis_url, args.requests)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(run_dir=Path(tmp))
        await server.start_async()
        try:
            await run(server.url, args.requests)
        finally:
            await server.stop_async()


if __name__ == "__main__":
    asyncio.run(main())
