"""Request dedupe: a request_id seen within the TTL is not run twice.

The marker stores where the request was first seen (topic/partition/offset). A second sighting at
the *same* position is Kafka redelivering the record after a crash, so it is processed again
(later stages are idempotent); at a different position it is a repeated request and is dropped.
"""

from __future__ import annotations

from redis.asyncio import Redis

from agentstream.state.keys import Keys


class RequestDedupe:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    async def first_sighting(self, tenant_id: str, request_id: str, position: str) -> bool:
        """True when this request should run: new, or a redelivery of the original record."""
        key = self._keys.request(tenant_id, request_id)
        if await self._redis.set(key, position, nx=True, ex=self._ttl_s):
            return True
        seen = await self._redis.get(key)
        return seen in (position, position.encode())
