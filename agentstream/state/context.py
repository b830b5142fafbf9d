"""AgentContext in Redis with optimistic concurrency.

The context is one hash: ``v`` (version), ``data`` (JSON), ``a`` (the request holding the
session, ``request_id|since_ms``, for the double-text policy) and ``r`` (the ids of the session's
latest responses, space-separated, at most :data:`RECORDED_RESPONSES`: a request that names the
response it follows is refused with ``CONTEXT_LOST`` when the session does not know it, so lost
history is never silent). Writers read, change a copy and
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
from dataclasses import dataclass, field
from typing import Any

from agentstream.state.exceptions import (
    ConcurrentUpdateError,
    ContextLostError,
    SessionBusyError,
    SessionForbiddenError,
)
from agentstream.state.keys import Keys
from agentstream.state.redis import RedisClient

# KEYS[1] context key; KEYS[2] (optional) a step-journal entry completed in the same write
# ARGV: expected version ("0" = must not exist), data, ttl s, claim request_id ("" = none),
#       now ms, stale ms, response id the session must know ("" = none),
#       [step result, step retention s]
# Returns the new version, -1 on a version conflict, -2 when another request holds the session,
# -3 when the session does not know the response the request follows.
_CAS = """
local cur = redis.call('HGET', KEYS[1], 'v')
if cur == false then cur = '0' end
if cur ~= ARGV[1] then return -1 end
if ARGV[4] ~= '' then
  local a = redis.call('HGET', KEYS[1], 'a')
  if a then
    local sep = string.find(a, '|', 1, true)
    local holder = string.sub(a, 1, sep - 1)
    local since = tonumber(string.sub(a, sep + 1))
    if holder ~= ARGV[4] and tonumber(ARGV[5]) - since < tonumber(ARGV[6]) then return -2 end
  end
end
-- checked once the session is free: the request before this one has recorded its response
if ARGV[7] ~= '' then
  local r = redis.call('HGET', KEYS[1], 'r') or ''
  if not string.find(' ' .. r .. ' ', ' ' .. ARGV[7] .. ' ', 1, true) then return -3 end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'a', ARGV[4] .. '|' .. ARGV[5]) end
local nv = tonumber(cur) + 1
redis.call('HSET', KEYS[1], 'v', nv, 'data', ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if KEYS[2] then
  redis.call('HSET', KEYS[2], 'status', 'done', 'result', ARGV[8])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9]))
end
return nv
"""

# KEYS[1] context key; ARGV: request_id, response id ("" = none), ttl s, responses kept.
# Frees the session if that request holds it, and records the response among the session's
# latest (a hash holding only that record expires like a context). Idempotent.
_RELEASE = """
local freed = 0
local a = redis.call('HGET', KEYS[1], 'a')
if a and string.sub(a, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then
  redis.call('HDEL', KEYS[1], 'a')
  freed = 1
end
if ARGV[2] ~= '' then
  local r = redis.call('HGET', KEYS[1], 'r') or ''
  if not string.find(' ' .. r .. ' ', ' ' .. ARGV[2] .. ' ', 1, true) then
    if r == '' then r = ARGV[2] else r = r .. ' ' .. ARGV[2] end
    local _, spaces = string.gsub(r, ' ', ' ')
    for _ = 1, spaces + 1 - tonumber(ARGV[4]) do
      r = string.sub(r, string.find(r, ' ', 1, true) + 1)
    end
    redis.call('HSET', KEYS[1], 'r', r)
    if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3])) end
  end
end
return freed
"""

_UNSET: Any = object()

MAX_STORED_MESSAGES = 200
#: How many of a session's latest response ids its context records (``r``).
RECORDED_RESPONSES = 32


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
    # Which request holds the session (double-text policy); stored apart from the JSON.
    active_request: str | None = None
    version: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "session_id": self.session_id,
                "user_id": self.user_id,
                "tenant_id": self.tenant_id,
                "history": self.history,
                "available_tools": self.available_tools,
                "state": self.state,
                "created_at": self.created_at,
                "last_activity": self.last_activity,
                "metadata": self.metadata,
            },
            separators=(",", ":"),
        )

    def owned_by(self, tenant_id: str, user_id: str) -> bool:
        """A session belongs to one (tenant, user): the pair that created it."""
        return self.tenant_id == tenant_id and self.user_id == user_id

    @classmethod
    def from_json(
        cls, raw: bytes | str, version: int, active_request: str | None = None
    ) -> AgentContext:
        return cls(**json.loads(raw), version=version, active_request=active_request)


class ContextStore:
    def __init__(
        self, redis: RedisClient, keys: Keys, *, ttl_s: int, max_attempts: int = 50
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._max_attempts = max_attempts
        self._cas = redis.register_script(_CAS)
        self._release = redis.register_script(_RELEASE)

    def key(self, tenant_id: str, session_id: str) -> str:
        return self._keys.context(tenant_id, session_id)

    def pipeline(self) -> Any:
        """A non-transactional pipeline on the same client (to batch independent reads)."""
        return self._redis.pipeline(transaction=False)

    def queue_get(self, pipe: Any, tenant_id: str, session_id: str) -> None:
        """Add this context's read to a pipeline (see :meth:`parse_get`)."""
        pipe.hmget(self._keys.context(tenant_id, session_id), ["v", "data", "a"])

    @staticmethod
    def parse_get(raw: list[Any]) -> AgentContext | None:
        version, data, active = raw
        if version is None or data is None:
            return None
        text = active.decode() if isinstance(active, bytes) else active
        holder = text.rsplit("|", 1)[0] if text else None
        return AgentContext.from_json(data, int(version), holder)

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None:
        key = self._keys.context(tenant_id, session_id)
        return self.parse_get(await self._redis.hmget(key, ["v", "data", "a"]))

    async def update(
        self,
        tenant_id: str,
        session_id: str,
        change: Callable[[AgentContext | None], AgentContext | None],
        *,
        current: AgentContext | None = _UNSET,
        claim: str | None = None,
        stale_s: float = 0.0,
        complete_step: tuple[str, str, int] | None = None,
        owner: tuple[str, str] | None = None,
        follows: str | None = None,
    ) -> AgentContext | None:
        """Apply ``change`` atomically. ``change`` gets the current context (or None) and returns
        the new one, or None to leave it untouched. It may run more than once: keep it pure
        (it may mutate and return the object it was given).

        ``current``: a context this caller just read; the first attempt skips the read.
        ``claim``: also make this request the session's active one; raises
        :class:`SessionBusyError` while another request (active for less than ``stale_s``)
        holds it.
        ``complete_step``: (step key, result, retention s) of a step-journal entry to mark done
        in the same atomic write (saves a round trip on the hot path).
        ``owner``: (tenant_id, user_id) of the caller; raises :class:`SessionForbiddenError`
        (and changes nothing) when the stored session belongs to another pair.
        ``follows``: a response id the session must have recorded; raises
        :class:`ContextLostError` (and changes nothing) when it has not."""
        key = self._keys.context(tenant_id, session_id)
        keys = [key, complete_step[0]] if complete_step else [key]
        known = current
        for attempt in range(self._max_attempts):
            if attempt:  # lost a race: back off a little, with jitter, before re-reading
                await asyncio.sleep(random.uniform(0, 0.001 * min(attempt, 20)))
            if attempt or known is _UNSET:
                current = await self.get(tenant_id, session_id)
            else:
                current = known
            if owner is not None and current is not None and not current.owned_by(*owner):
                raise SessionForbiddenError(f"session {session_id!r} belongs to another user")
            new = change(current)
            if new is None:
                return current
            args = self._cas_args(current, new, claim, stale_s, complete_step, follows)
            result = int(await self._cas(keys=keys, args=args))
            if result >= 0:
                new.version = result
                if claim:
                    new.active_request = claim
                return new
            if result == -2:
                raise SessionBusyError(f"session {session_id!r} is answering another request")
            if result == -3:
                raise ContextLostError(
                    f"session {session_id!r} does not hold the response this request follows"
                )
        raise ConcurrentUpdateError(f"gave up updating session {session_id!r} after contention")

    def _cas_args(
        self,
        current: AgentContext | None,
        new: AgentContext,
        claim: str | None,
        stale_s: float,
        complete_step: tuple[str, str, int] | None,
        follows: str | None = None,
    ) -> list[str | int]:
        """The compare-and-set script's arguments (see ``_CAS``); trims the stored history."""
        new.last_activity = now_ms()
        if len(new.history) > MAX_STORED_MESSAGES:
            new.history = new.history[-MAX_STORED_MESSAGES:]
        args: list[str | int] = [
            current.version if current else 0,
            new.to_json(),
            self._ttl_s,
            claim or "",
            now_ms(),
            int(stale_s * 1000),
            follows or "",
        ]
        if complete_step:
            args += [complete_step[1], complete_step[2]]
        return args

    async def release(
        self, tenant_id: str, session_id: str, request_id: str, response_id: str | None = None
    ) -> None:
        """Mark ``request_id`` finished so the session's next request may start, and record
        ``response_id`` among the session's latest responses. Idempotent."""
        await self._release(
            keys=[self._keys.context(tenant_id, session_id)],
            args=[request_id, response_id or "", self._ttl_s, RECORDED_RESPONSES],
        )

    async def delete(self, tenant_id: str, session_id: str) -> None:
        await self._redis.delete(self._keys.context(tenant_id, session_id))
