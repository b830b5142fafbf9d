"""The session store in one process's memory: the same rules as the Redis store (dedupe by
position, the session claim with its stale timeout, owner checks, journaled steps), no Redis.

For :mod:`agentstream.testing` and unit tests. Nothing expires; contexts are stored serialized,
as in Redis, so a caller never shares an object with the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agentstream.state.context import (
    MAX_STORED_MESSAGES,
    RECORDED_RESPONSES,
    AgentContext,
    now_ms,
)
from agentstream.state.exceptions import SessionForbiddenError
from agentstream.state.journal import StepState
from agentstream.state.session import (
    UNREAD,
    Change,
    Claim,
    ClaimOutcome,
    Opening,
    OpenReading,
    RequestIds,
    open_then_begin,
)


@dataclass(kw_only=True)
class _Stored:
    """A session as Redis holds it: no conversation yet (``data`` None) once claimed."""

    owner: tuple[str, str] | None = None  # set by a claim or a write, not by a recorded response
    version: int = 0
    data: str | None = None
    active: tuple[str, int] | None = None  # (request_id, since ms)
    responses: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class _Step:
    status: str
    owner: str
    result: str | None = None


class MemorySessionStore:
    def __init__(self, *, owner: str = "memory") -> None:
        self._owner = owner
        self._contexts: dict[tuple[str, str], _Stored] = {}
        self._seen: dict[tuple[str, str], str] = {}
        self._steps: dict[tuple[str, str, str], _Step] = {}

    def _read(self, tenant_id: str, session_id: str) -> AgentContext | None:
        stored = self._contexts.get((tenant_id, session_id))
        if stored is None:
            return None
        holder = stored.active[0] if stored.active else None
        if stored.data is None:
            if stored.owner is None:
                return None
            tenant, user = stored.owner
            return AgentContext(
                session_id=session_id, user_id=user, tenant_id=tenant, active_request=holder
            )
        return AgentContext.from_json(stored.data, stored.version, holder)

    async def open(self, ids: RequestIds, position: str, claim: Claim) -> Opening:
        first = self._seen.setdefault((ids.tenant_id, ids.request_id), position) == position
        outcome = await self.claim(ids, claim)
        if not first and outcome is ClaimOutcome.CLAIMED:
            self._settle(ids, None)
        return Opening(first_sighting=first, claim=outcome)

    async def open_reading(
        self, ids: RequestIds, position: str, claim: Claim, step_id: str
    ) -> OpenReading:
        return await open_then_begin(self, ids, position, claim, step_id)

    async def claim(self, ids: RequestIds, claim: Claim) -> ClaimOutcome:
        key = (ids.tenant_id, ids.session_id)
        stored = self._contexts.get(key)
        if stored is not None and stored.owner not in (None, ids.owner):
            return ClaimOutcome.FORBIDDEN
        now = now_ms()
        held = stored is not None and stored.active is not None
        if stored is not None and stored.active is not None:
            holder, since = stored.active
            if holder != ids.request_id and now - since < claim.stale_s * 1000:
                return ClaimOutcome.BUSY
            held = holder == ids.request_id
        responses = stored.responses if stored is not None else []
        if claim.follows is not None and claim.follows not in responses:
            return ClaimOutcome.HISTORY_LOST
        if stored is None:
            stored = self._contexts[key] = _Stored()
        stored.owner = ids.owner
        stored.active = (ids.request_id, now)
        return ClaimOutcome.HELD if held else ClaimOutcome.CLAIMED

    async def update(
        self,
        ids: RequestIds,
        change: Change,
        *,
        current: AgentContext | None = UNREAD,
        complete_step: tuple[str, str] | None = None,
        ends_with: str | None = None,
    ) -> AgentContext | None:
        # one event loop, no await below: the read-change-write is atomic as the Lua CAS is;
        # a caller's ``current`` is not needed (reading here costs nothing)
        current = self._read(ids.tenant_id, ids.session_id)
        if current is not None and not current.owned_by(*ids.owner):
            raise SessionForbiddenError(f"session {ids.session_id!r} belongs to another user")
        key = (ids.tenant_id, ids.session_id)
        new = change(current)
        if new is None:
            return current
        new.last_activity = now_ms()
        new.history = new.history[-MAX_STORED_MESSAGES:]
        stored = self._contexts.get(key) or _Stored()
        self._contexts[key] = stored
        stored.owner = stored.owner or ids.owner
        stored.version += 1
        stored.data = new.to_json()
        if complete_step is not None:
            step_id, result = complete_step
            self._steps[(*key, step_id)] = _Step(status="done", owner=self._owner, result=result)
        new.version = stored.version
        new.active_request = stored.active[0] if stored.active else None
        if ends_with is not None:
            self._settle(ids, ends_with)
            new.active_request = None
        return new

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None:
        return self._read(tenant_id, session_id)

    async def begin_step(
        self, ids: RequestIds, step_id: str, *, rerun_unknown: bool = False
    ) -> StepState:
        key = (ids.tenant_id, ids.session_id, step_id)
        step = self._steps.get(key)
        if step is not None and step.status == "done":
            return StepState(status="done", result=step.result)
        if step is not None and step.status == "unknown" and not rerun_unknown:
            return StepState(status="unknown")
        self._steps[key] = _Step(status="running", owner=self._owner)
        if step is not None and step.status == "running":
            return StepState(status="in_flight", previous_owner=step.owner)
        return StepState(status="new")

    async def begin_step_reading(
        self, ids: RequestIds, step_id: str
    ) -> tuple[StepState, AgentContext | None]:
        state = await self.begin_step(ids, step_id)
        return state, self._read(ids.tenant_id, ids.session_id)

    async def complete_step(self, ids: RequestIds, step_id: str, result: str) -> None:
        key = (ids.tenant_id, ids.session_id, step_id)
        self._steps[key] = _Step(status="done", owner=self._owner, result=result)

    async def mark_step_unknown(self, ids: RequestIds, step_id: str) -> None:
        key = (ids.tenant_id, ids.session_id, step_id)
        self._steps[key] = _Step(status="unknown", owner=self._owner)

    async def release(
        self, ids: RequestIds, response_id: str | None = None, *, held: bool = True
    ) -> None:
        self._settle(ids, response_id, held=held)

    def _settle(self, ids: RequestIds, response_id: str | None, *, held: bool = False) -> None:
        key = (ids.tenant_id, ids.session_id)
        stored = self._contexts.get(key)
        active = stored.active if stored is not None else None
        holds = active is not None and active[0] == ids.request_id
        if holds and stored is not None:
            stored.active = None
        if response_id is None:
            return
        if held and not holds and (stored is None or stored.data is None):
            return  # the session was lost since this request claimed it: not recorded
        if stored is None:
            stored = self._contexts[key] = _Stored()
        if response_id not in stored.responses:
            stored.responses.append(response_id)
            del stored.responses[:-RECORDED_RESPONSES]

    def expire(self, tenant_id: str, session_id: str) -> None:
        """Drop a session's context, as its Redis TTL would (for tests of CONTEXT_LOST)."""
        self._contexts.pop((tenant_id, session_id), None)
