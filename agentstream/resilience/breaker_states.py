"""Read circuit-breaker states for health and status displays (never changes them).

The breakers of a worker's own configuration are known by key (``llm:<provider>``,
``tools:<server>``); :func:`scan_breaker_keys` finds every breaker any worker has written, for
``agentstream status``. An absent key means closed.
"""

from __future__ import annotations

from collections.abc import Iterable

from agentstream.resilience.breaker import BreakerSnapshot, CircuitBreaker
from agentstream.state.keys import key_part_decode
from agentstream.state.redis import RedisClient


async def scan_breaker_keys(redis: RedisClient, namespace: str) -> list[str]:
    """The key of every breaker with state in Redis (``llm:openai``, ``tools:github``)."""
    prefix = f"{namespace}:breaker:"
    found: set[str] = set()
    async for raw in redis.scan_iter(match=f"{prefix}*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        found.add(key_part_decode(key.removeprefix(prefix)))
    return sorted(found)


async def breaker_snapshots(
    redis: RedisClient, namespace: str, keys: Iterable[str]
) -> list[BreakerSnapshot]:
    """The shared state of each breaker in ``keys``, in that order."""
    return [await CircuitBreaker(redis, key, namespace=namespace).snapshot() for key in keys]
