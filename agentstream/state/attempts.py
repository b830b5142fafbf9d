"""Stream attempt numbers: each model call of a request's turn that streams gets the next one.

A turn can be attempted many times: retries and fallbacks inside one model call, a repair or
simplified-context call, a retry tier, a redelivery after a crash, a replay from a dead-letter
topic, on any worker. Consumers of ``agent.stream`` drop the text of an attempt when a higher
one of the same turn appears, so the numbers must increase across all of these: they come from
one Redis counter per (request, turn), ``{prefix}:att:{T:S}:REQUEST:tTURN`` (next to the
session's keys in the same Redis Cluster slot), kept as long as the step journal.
"""

from __future__ import annotations

from typing import Protocol

from agentstream.state.keys import Keys, hash_tag, key_part
from agentstream.state.redis import RedisClient


class AttemptCounter(Protocol):
    async def next(self, tenant_id: str, session_id: str, request_id: str, turn: int) -> int:
        """The next attempt number of this turn (1 for the first)."""
        ...


class RedisAttempts:
    """One ``INCR`` (with its expiry, in one round trip) per streamed attempt."""

    def __init__(self, redis: RedisClient, keys: Keys, *, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    def key(self, tenant_id: str, session_id: str, request_id: str, turn: int) -> str:
        tag = hash_tag(tenant_id, session_id)
        return f"{self._keys.prefix}:att:{tag}:{key_part(request_id)}:t{turn}"

    async def next(self, tenant_id: str, session_id: str, request_id: str, turn: int) -> int:
        key = self.key(tenant_id, session_id, request_id, turn)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, self._ttl_s)
            number, _ = await pipe.execute()
        return int(number)


class MemoryAttempts:
    """The same numbering in one process (``agentstream.testing``, unit tests)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str, int], int] = {}

    async def next(self, tenant_id: str, session_id: str, request_id: str, turn: int) -> int:
        key = (tenant_id, session_id, request_id, turn)
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]
