"""Auto-pipelining of script calls (state/autopipe.py) on a real Redis (or Redis Cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.exceptions import ResponseError

from agentstream.state.autopipe import AutoPipeline

pytestmark = pytest.mark.integration

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL = "return redis.error_reply('nope ' .. ARGV[1])"


async def test_concurrent_calls_share_pipelines_and_each_gets_its_reply(
    redis: Any, unique_prefix: str
) -> None:
    pipe = AutoPipeline(redis, max_batch=50)
    incr = pipe.register_script(INCR)
    keys = [f"{unique_prefix}:{{k{i % 5}}}" for i in range(200)]
    replies = await asyncio.gather(*(incr(keys=[k], args=[1]) for k in keys))
    # each caller got the reply of its own call: per key, the counts 1..40 once each (batches
    # run concurrently, so which caller saw which count is not fixed)
    for i in range(5):
        assert sorted(int(r) for r, k in zip(replies, keys, strict=True) if k == keys[i]) == list(
            range(1, 41)
        )
    assert [int(await redis.get(f"{unique_prefix}:{{k{i}}}")) for i in range(5)] == [40] * 5
    assert pipe.calls == 200
    assert pipe.batches <= 5  # 200 calls of one event-loop turn: 4 pipelines of at most 50


async def test_an_error_reply_is_its_callers_alone(redis: Any, unique_prefix: str) -> None:
    pipe = AutoPipeline(redis)
    incr, fail = pipe.register_script(INCR), pipe.register_script(FAIL)
    key = f"{unique_prefix}:one"
    good, bad = await asyncio.gather(
        incr(keys=[key], args=[2]), fail(keys=[key], args=["x"]), return_exceptions=True
    )
    assert int(good) == 2
    assert isinstance(bad, ResponseError)
    assert "nope x" in str(bad)


async def test_an_unknown_script_is_loaded_and_sent_again(redis: Any, unique_prefix: str) -> None:
    pipe = AutoPipeline(redis)
    incr = pipe.register_script(INCR)
    key = f"{unique_prefix}:flush"
    assert int(await incr(keys=[key], args=[1])) == 1
    await redis.script_flush()  # a restarted server or a promoted replica knows no scripts
    assert [int(r) for r in await asyncio.gather(*(incr(keys=[key], args=[1]) for _ in range(3)))]
    assert int(await redis.get(key)) == 4


async def test_a_call_alone_in_its_turn_gets_its_reply_its_error_and_a_reloaded_script(
    redis: Any, unique_prefix: str
) -> None:
    pipe = AutoPipeline(redis)
    incr, fail = pipe.register_script(INCR), pipe.register_script(FAIL)
    key = f"{unique_prefix}:alone"
    assert int(await incr(keys=[key], args=[5])) == 5
    with pytest.raises(ResponseError, match="nope y"):
        await fail(keys=[key], args=["y"])
    await redis.script_flush()
    assert int(await incr(keys=[key], args=[1])) == 6  # NOSCRIPT: loaded and sent again
    assert pipe.batches == pipe.calls == 3
