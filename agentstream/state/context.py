"""AgentContext in Redis with optimistic concurrency.

The context is one hash: ``v`` (version) and ``data`` (JSON). Writers read, change a copy and
write it back with a Lua compare-and-set on the version; a writer that lost the race re-reads and
re-applies its change, so two workers touching one session never lose an update. Every write
refreshes the TTL (activity keeps a session alive).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from agentstream.state.exceptions import ConcurrentUpdateError, ContextLostError
from agentstream.state.keys import Keys

# KEYS[1] context key; ARGV: expected version ("0" = must not exist), data, ttl seconds
_CAS = """
local cur = redis.call('HGET', KEYS[1], 'v')
if cur == false then cur = '0' end
if cur ~= ARGV[1] then return -1 end
local nv = tonumber(cur) + 1
redis.call('HSET', KEYS[1], 'v', nv, 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return nv
"""

MAX_STORED_MESSAGES = 200


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(kw_only=True)
class AgentContext:
    """A session's conversation and state. ``history`` entries are JSON-able message dicts
    (role, content, tool_calls, tool_call_id, name) tagged with ``request_id`` and ``turn``."""

    session_id: str
    user_id: str
    tenant_id: str
    history: list[dict[str, Any]] = field(default_factory=list)
    available_tools: list[str] = field(default_factory=list)
    state: str = "IDLE"
    created_at: int = field(default_factory=now_ms)
    last_activity: int = field(default_factory=now_ms)
    metadata: dict[str, str] = field(default_factory=dict)
    active_request: str | None = None
    active_since: int = 0
    version: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("version")
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str, version: int) -> AgentContext:
        data = json.loads(raw)
        return cls(**data, version=version)


class ContextStore:
    def __init__(self, redis: Redis, keys: Keys, *, ttl_s: int, max_attempts: int = 50) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._max_attempts = max_attempts
        self._cas = redis.register_script(_CAS)

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None:
        raw = await self._redis.hmget(self._keys.context(tenant_id, session_id), ["v", "data"])
        version, data = raw[0], raw[1]
        if version is None or data is None:
            return None
        return AgentContext.from_json(data, int(version))

    async def require(self, tenant_id: str, session_id: str) -> AgentContext:
        ctx = await self.get(tenant_id, session_id)
        if ctx is None:
            raise ContextLostError(f"context of session {session_id!r} is gone (expired?)")
        return ctx

    async def update(
        self,
        tenant_id: str,
        session_id: str,
        change: Callable[[AgentContext | None], AgentContext | None],
    ) -> AgentContext | None:
        """Apply ``change`` atomically. ``change`` gets the current context (or None) and returns
        the new one, or None to leave it untouched. It may run more than once: keep it pure."""
        key = self._keys.context(tenant_id, session_id)
        for attempt in range(self._max_attempts):
            if attempt:  # lost a race: back off a little, with jitter, before re-reading
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
            current = await self.get(tenant_id, session_id)
            expected = current.version if current else 0
            new = change(current)
            if new is None:
                return current
            new.last_activity = now_ms()
            if len(new.history) > MAX_STORED_MESSAGES:
                new.history = new.history[-MAX_STORED_MESSAGES:]
            result = await self._cas(keys=[key], args=[expected, new.to_json(), self._ttl_s])
            if int(result) >= 0:
                new.version = int(result)
                return new
        raise ConcurrentUpdateError(f"gave up updating session {session_id!r} after contention")

    async def release(self, tenant_id: str, session_id: str, request_id: str) -> None:
        """Mark ``request_id`` finished so the session's next request may start."""

        def change(ctx: AgentContext | None) -> AgentContext | None:
            if ctx is None or ctx.active_request != request_id:
                return None
            ctx.active_request = None
            ctx.active_since = 0
            return ctx

        await self.update(tenant_id, session_id, change)

    async def delete(self, tenant_id: str, session_id: str) -> None:
        await self._redis.delete(self._keys.context(tenant_id, session_id))
