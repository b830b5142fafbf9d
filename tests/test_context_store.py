"""AgentContext in real Redis: concurrent writers lose no update; TTL is refreshed."""

from __future__ import annotations

import asyncio

import pytest

from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.keys import Keys
from tests.support.redis import connect

pytestmark = pytest.mark.integration


async def test_two_writers_lose_no_update(redis_url: str, unique_prefix: str) -> None:
    a, b = connect(redis_url), connect(redis_url)  # two "workers"
    keys = Keys(unique_prefix)
    stores = [ContextStore(a, keys, ttl_s=60), ContextStore(b, keys, ttl_s=60)]

    def append(n: int):  # type: ignore[no-untyped-def]
        def change(ctx: AgentContext | None) -> AgentContext:
            ctx = ctx or AgentContext(session_id="s", user_id="u", tenant_id="t")
            ctx.history.append({"n": n})
            return ctx

        return change

    await asyncio.gather(*(stores[i % 2].update("t", "s", append(i)) for i in range(60)))
    ctx = await stores[0].get("t", "s")
    assert ctx is not None
    assert sorted(e["n"] for e in ctx.history) == list(range(60))
    assert ctx.version == 60
    ttl = await a.ttl(keys.context("t", "s"))
    assert 0 < ttl <= 60
    await stores[0].delete("t", "s")
    assert await stores[1].get("t", "s") is None
    await a.aclose()
    await b.aclose()


async def test_keys_are_tenant_scoped(redis_url: str, unique_prefix: str) -> None:
    redis = connect(redis_url)
    store = ContextStore(redis, Keys(unique_prefix), ttl_s=60)
    await store.update(
        "t1", "s", lambda c: AgentContext(session_id="s", user_id="u", tenant_id="t1")
    )
    assert await store.get("t2", "s") is None
    assert await store.get("t1", "s") is not None
    await redis.aclose()
