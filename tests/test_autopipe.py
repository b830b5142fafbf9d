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


class HeldPipeline(AutoPipeline):
    """Batches wait for ``gate`` before they go out (a slow round trip, told apart from Redis:
    a cluster node answers BUSY to other callers while a slow script runs)."""

    def __init__(self, redis: Any, **kwargs: Any) -> None:
        super().__init__(redis, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.sizes: list[int] = []

    async def _send(self, batch: list[Any]) -> None:
        self.sizes.append(len(batch))
        await self.gate.wait()
        await super()._send(batch)


async def _held(redis: Any, key: str, *, linger_s: float) -> tuple[HeldPipeline, Any, str]:
    """A held pipeline (one batch in flight at most) with INCR loaded, its gate closed."""
    pipe = HeldPipeline(redis, max_in_flight=1, linger_s=linger_s)
    incr = pipe.register_script(INCR)
    await incr(keys=[key], args=[0])  # loads the script
    pipe.sizes.clear()
    pipe.gate.clear()
    return pipe, incr, key


async def test_calls_that_arrive_while_a_batch_is_out_share_the_next_write(
    redis: Any, unique_prefix: str
) -> None:
    pipe, incr, key = await _held(redis, f"{unique_prefix}:linger", linger_s=5.0)
    first = asyncio.ensure_future(incr(keys=[key], args=[1]))
    later = []
    for _ in range(4):  # one call per event-loop turn, while the first is out
        await asyncio.sleep(0.002)
        later.append(asyncio.ensure_future(incr(keys=[key], args=[1])))
    await asyncio.sleep(0.01)
    assert pipe.sizes == [1]  # nothing went out behind the first call
    pipe.gate.set()
    assert int(await first) == 1
    assert sorted(int(r) for r in await asyncio.gather(*later)) == [2, 3, 4, 5]
    assert pipe.sizes == [1, 4]  # the four shared one write


async def test_a_queued_call_waits_at_most_the_linger_bound(redis: Any, unique_prefix: str) -> None:
    pipe, incr, key = await _held(redis, f"{unique_prefix}:bound", linger_s=0.01)
    first = asyncio.ensure_future(incr(keys=[key], args=[1]))
    await asyncio.sleep(0.002)
    second = asyncio.ensure_future(incr(keys=[key], args=[1]))
    await asyncio.sleep(0.05)  # the bound (10 ms) has passed, the first is still out
    assert pipe.sizes == [1, 1]
    assert not first.done()
    pipe.gate.set()
    assert sorted([int(await first), int(await second)]) == [1, 2]


async def test_a_lone_call_goes_out_at_once(redis: Any, unique_prefix: str) -> None:
    pipe = HeldPipeline(redis, max_in_flight=1, linger_s=5.0)
    incr = pipe.register_script(INCR)
    key = f"{unique_prefix}:lone"
    for n in range(1, 4):  # nothing else in flight: no linger however long the bound
        assert int(await asyncio.wait_for(incr(keys=[key], args=[1]), timeout=1)) == n
    assert pipe.sizes[-3:] == [1, 1, 1]


def test_a_batch_is_packed_to_the_bytes_redis_py_sends() -> None:
    """The hiredis packer gives the bytes of redis-py's own asyncio packer (what is sent to
    Redis does not change), floats, integers, bytes and non-ASCII text included."""
    from redis.asyncio.connection import Connection

    from agentstream.state.autopipe import _pack

    conn = Connection()
    commands = [
        ("EVALSHA", "e0e1f9fa", 2, "as:{t:s}:ctx", b"as:{t:s}:step", "r1", 30, 0.1, -1, "é"),
        ("EVALSHA", "e0e1f9fa", 1, "k", 1e20, 3.0, b"\x00\xff", ""),
    ]
    assert bytes(_pack(conn, commands)) == b"".join(conn.pack_commands(commands))
