"""Tool-result cache in Redis, for read-only tools only.

Key: ``{prefix}:toolcache:{tenant}:{tool}:{sha256 of the canonical JSON arguments}``, so tenants
never share results and the arguments themselves are not stored in the key. Only successful
results are stored, for the tool's TTL. The cache is best effort: a Redis error is logged (without
arguments or results) and the call goes to the tool.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from redis.exceptions import RedisError

from agentstream.observability.logging import get_logger
from agentstream.state.keys import key_part
from agentstream.state.redis import RedisClient

log = get_logger(__name__)


def canonical_json(arguments: dict[str, Any]) -> str:
    """One spelling per argument set: sorted keys, no whitespace, non-ASCII kept as is."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def arguments_digest(arguments: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(arguments).encode()).hexdigest()


class ToolResultCache:
    def __init__(self, redis: RedisClient, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix

    def key(self, tenant_id: str, tool: str, arguments: dict[str, Any]) -> str:
        digest = arguments_digest(arguments)
        return f"{self._prefix}:toolcache:{key_part(tenant_id)}:{key_part(tool)}:{digest}"

    async def get(self, tenant_id: str, tool: str, arguments: dict[str, Any]) -> str | None:
        try:
            raw = await self._redis.get(self.key(tenant_id, tool, arguments))
        except RedisError as exc:
            log.warning("tool cache read failed", tool=tool, error=type(exc).__name__)
            return None
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def put(
        self, tenant_id: str, tool: str, arguments: dict[str, Any], content: str, ttl_s: int
    ) -> None:
        if ttl_s <= 0:
            return
        try:
            await self._redis.set(self.key(tenant_id, tool, arguments), content.encode(), ex=ttl_s)
        except RedisError as exc:
            log.warning("tool cache write failed", tool=tool, error=type(exc).__name__)
