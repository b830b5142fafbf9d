"""Request dedupe: a request_id seen within the TTL is not run twice.

The marker stores where the request was first seen (topic/partition/offset) and its session
(``<position> <session key part>``; markers written before the session was added hold the
position only). A second sighting at the *same* position is Kafka redelivering the record after a
crash, so it is processed again (later stages are idempotent); at a different position it is a
repeated request and is dropped. The session lets a cancel request that names only the request
find its session (state/cancels.py).
"""

from __future__ import annotations

from typing import Any

from agentstream.state.keys import Keys, key_part, key_part_decode
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

    def queue_first_sighting(self, pipe: Any, tenant_id: str, request_id: str, marker: str) -> None:
        """Add the check to a pipeline: two replies, read them with :meth:`parse`."""
        key = self._keys.request(tenant_id, request_id)
        pipe.set(key, marker, nx=True, ex=self._ttl_s)
        pipe.get(key)

    @staticmethod
    def marker(position: str, session_id: str) -> str:
        """What the marker stores: the first sighting's position and the request's session."""
        return f"{position} {key_part(session_id)}"

    @staticmethod
    def parse(stored: Any, position: str) -> bool:
        """The stored position is this record's: new, or a redelivery of the original."""
        text = stored.decode() if isinstance(stored, bytes) else stored
        return isinstance(text, str) and text.split(" ", 1)[0] == position

    @staticmethod
    def session_of(stored: Any) -> str | None:
        """The session a marker names (None: an older marker, or none)."""
        text = stored.decode() if isinstance(stored, bytes) else stored
        if not isinstance(text, str) or " " not in text:
            return None
        return key_part_decode(text.split(" ", 1)[1])
