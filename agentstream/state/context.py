"""AgentContext in Redis with optimistic concurrency.

The context is one hash (fields and scripts: state/context_scripts.py): ``v`` (version),
``data`` (the conversation, JSON), ``a`` (the request holding the session, for the double-text
policy), ``o`` (the owner, tenant and user) and ``r`` (the ids of the session's latest
responses, at most :data:`RECORDED_RESPONSES`: a request that names the response it follows is
refused with ``CONTEXT_LOST`` when the session does not know it, so lost history is never
silent).

A request *claims* the session with one script that neither reads nor writes the conversation
(:meth:`ContextStore.claim`): it checks the owner, the claim and the response the request
follows. Writers of the conversation read, change a copy and write it back with a Lua
compare-and-set on the version; a writer that lost the race re-reads and re-applies its change,
so two workers touching one session never lose an update. The write that records a request's
final answer also frees the session and records the response. Every write leaves the session at
least 90 % of its TTL (activity keeps a session alive): the claim and the writes refresh it, the
final write of a request claimed less than a tenth of the TTL ago finds it fresh already.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from agentstream.state import context_scripts as lua
from agentstream.state.autopipe import AutoPipeline
from agentstream.state.exceptions import ConcurrentUpdateError, SessionForbiddenError
from agentstream.state.keys import Keys
from agentstream.state.redis import RedisClient

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


class StepDone(NamedTuple):
    """A step-journal entry marked done in the same write as the context."""

    key: str
    result: str
    retention_s: int
    ttl_right: bool = False
    """The caller knows the entry's TTL covers the retention already (state/journal.py): the
    write skips its ``EXPIRE`` unless the entry was gone."""


def owner_of(tenant_id: str, user_id: str) -> str:
    """The ``o`` field: who a session belongs to."""
    return f"{tenant_id}|{user_id}"


class ContextStore:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        *,
        ttl_s: int,
        max_attempts: int = 50,
        scripts: AutoPipeline | None = None,
    ) -> None:
        """``scripts``: send the script calls through an auto-pipeline (state/autopipe.py)."""
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._max_attempts = max_attempts
        register: Any = (scripts or redis).register_script
        self._cas = register(lua.CAS)
        self._release = register(lua.RELEASE)
        self.claim_script = register(lua.CLAIM)

    def key(self, tenant_id: str, session_id: str) -> str:
        return self._keys.context(tenant_id, session_id)

    def pipeline(self) -> Any:
        """A non-transactional pipeline on the same client (to batch independent commands)."""
        return self._redis.pipeline(transaction=False)

    @staticmethod
    def parse_get(raw: list[Any], session_id: str | None = None) -> AgentContext | None:
        """The context from fields ``v, data, a, o``. A session that exists (claimed, or with
        responses recorded) but has no conversation yet is an empty context when
        ``session_id`` is given; a session that does not exist is None."""
        version, data, active, owner = (*raw, None, None, None, None)[:4]
        holder = (_text(active).rsplit("|", 1)[0] or None) if active else None  # FREE: None
        if version is not None and data is not None:
            return AgentContext.from_json(data, int(version), holder)
        if session_id is None or owner is None:
            return None
        tenant_id, _, user_id = _text(owner).partition("|")
        return AgentContext(
            session_id=session_id, user_id=user_id, tenant_id=tenant_id, active_request=holder
        )

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None:
        key = self._keys.context(tenant_id, session_id)
        return self.parse_get(await self._redis.hmget(key, FIELDS), session_id)

    def claim_args(
        self, request_id: str, owner: str, *, stale_s: float, follows: str | None, trusted: bool
    ) -> list[str | int]:
        """The arguments of the claim script (see ``context_scripts.CLAIM``)."""
        return [
            request_id,
            now_ms(),
            int(stale_s * 1000),
            owner,
            follows or "",
            self._ttl_s,
            "1" if trusted else "0",
        ]

    async def claim(
        self,
        tenant_id: str,
        session_id: str,
        request_id: str,
        *,
        user_id: str,
        stale_s: float,
        follows: str | None = None,
        trusted: bool = False,
    ) -> int:
        """Make ``request_id`` the session's active one; a ``context_scripts`` result code."""
        args = self.claim_args(
            request_id,
            owner_of(tenant_id, user_id),
            stale_s=stale_s,
            follows=follows,
            trusted=trusted,
        )
        key = self._keys.context(tenant_id, session_id)
        return int(await self.claim_script(keys=[key], args=args))

    async def update(
        self,
        tenant_id: str,
        session_id: str,
        change: Callable[[AgentContext | None], AgentContext | None],
        *,
        current: AgentContext | None = _UNSET,
        complete_step: StepDone | None = None,
        owner: tuple[str, str] | None = None,
        writer: str | None = None,
        ends: tuple[str, str] | None = None,
    ) -> AgentContext | None:
        """Apply ``change`` atomically. ``change`` gets the current context (or None) and returns
        the new one, or None to leave it untouched. It may run more than once: keep it pure
        (it may mutate and return the object it was given).

        ``current``: a context this caller just read; the first attempt skips the read.
        ``complete_step``: a step-journal entry to mark done in the same atomic write (saves a
        round trip on the hot path).
        ``owner``: (tenant_id, user_id) of the caller; raises :class:`SessionForbiddenError`
        (and changes nothing) when the stored session belongs to another pair.
        ``writer``: the request making the write: while it holds the session, claimed less
        than a tenth of the TTL ago, the write keeps the TTL the claim set.
        ``ends``: (request id, response id) of the request this write finishes: the session is
        freed if that request holds it and the response recorded, in the same write (saves the
        release's round trip; see :meth:`release`)."""
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
            result = int(
                await self._cas(
                    keys=keys, args=self._cas_args(current, new, writer, ends, complete_step)
                )
            )
            if result >= 0:
                new.version = result
                return new
        raise ConcurrentUpdateError(f"gave up updating session {session_id!r} after contention")

    def _cas_args(
        self,
        current: AgentContext | None,
        new: AgentContext,
        writer: str | None,
        ends: tuple[str, str] | None,
        complete_step: StepDone | None,
    ) -> list[str | int]:
        """The compare-and-set script's arguments (see ``context_scripts.CAS``); trims the
        stored history."""
        new.last_activity = now_ms()
        if len(new.history) > MAX_STORED_MESSAGES:
            new.history = new.history[-MAX_STORED_MESSAGES:]
        args: list[str | int] = [
            current.version if current else 0,
            new.to_json(),
            self._ttl_s,
            owner_of(new.tenant_id, new.user_id),
            ends[0] if ends else writer or "",
            *(("1", ends[1]) if ends else ("0", "")),
            RECORDED_RESPONSES,
            new.last_activity,  # now: how long ago the request's claim set the TTL
        ]
        if complete_step:
            step, ttl_right = complete_step, "1" if complete_step.ttl_right else "0"
            args += [step.result, step.retention_s, ttl_right]
        return args

    async def release(
        self,
        tenant_id: str,
        session_id: str,
        request_id: str,
        response_id: str | None = None,
        *,
        held: bool = True,
    ) -> None:
        """Mark ``request_id`` finished so the session's next request may start, and record
        ``response_id`` among the session's latest responses. ``held``: the request had claimed
        the session; its response is then recorded only while the session still holds it or
        still has a conversation (not when Redis lost the session meanwhile: the next request
        is refused ``CONTEXT_LOST`` rather than run on an empty history). Idempotent."""
        await self._release(
            keys=[self._keys.context(tenant_id, session_id)],
            args=[
                request_id,
                response_id or "",
                self._ttl_s,
                RECORDED_RESPONSES,
                "1" if held else "0",
            ],
        )

    async def delete(self, tenant_id: str, session_id: str) -> None:
        await self._redis.delete(self._keys.context(tenant_id, session_id))


#: The hash fields a context is read from.
FIELDS = ["v", "data", "a", "o"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
