"""Request dedupe: a request_id seen within the TTL is not run twice.

The marker stores where the request was first seen (topic/partition/offset). A second sighting at
the *same* position is Kafka redelivering the record after a crash, so it is processed again
(later stages are idempotent); at a different position it is a repeated request and is dropped.
"""

from __future__ import annotations

from typing import Any

from agentstream.state.keys import Keys
from agentstream.state.redis import RedisClient


class RequestDedupe:
    def __init__(self, redis: RedisClient, keys: Keys, *, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def key(self, tenant_id: str, request_id: str) -> str:
        return self._keys.request(tenant_id, request_id)

    def queue_first_sighting(
        self, pipe: Any, tenant_id: str, request_id: str, position: str
    ) -> None:
        """Add the check to a pipeline: two replies, read them with :meth:`parse`."""
        key = self._keys.request(tenant_id, request_id)
        pipe.set(key, position, nx=True, ex=self._ttl_s)
        pipe.get(key)

    @staticmethod
    def parse(stored: Any, position: str) -> bool:
        """The stored position is this record's: new, or a redelivery of the original."""
        return stored in (position, position.encode())
