"""The session store on Redis, shared by every worker.

Built from the context hash (state/context.py: a Lua compare-and-set with the session claim),
the step journal (state/journal.py) and the dedupe marker (state/dedupe.py); the key layout is
in state/keys.py. Keys of one session share a Redis Cluster hash tag, so the scripts that touch a
context and a journal entry together run on one node.
"""

from __future__ import annotations

from typing import Any

from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal, StepState
from agentstream.state.keys import Keys
from agentstream.state.session import UNREAD, Change, Opening, RequestIds


class RedisSessionStore:
    def __init__(
        self,
        redis: Any,
        keys: Keys,
        *,
        context_ttl_s: int,
        dedupe_ttl_s: int,
        journal_retention_s: int,
        owner: str,
    ) -> None:
        self.contexts = ContextStore(redis, keys, ttl_s=context_ttl_s)
        self.dedupe = RequestDedupe(redis, keys, ttl_s=dedupe_ttl_s)
        self.journal = StepJournal(redis, keys, retention_s=journal_retention_s, owner=owner)

    async def open(self, ids: RequestIds, position: str) -> Opening:
        pipe = self.contexts.pipeline()
        self.dedupe.queue_first_sighting(pipe, ids.tenant_id, ids.request_id, position)
        self.contexts.queue_get(pipe, ids.tenant_id, ids.session_id)
        _, stored, raw_ctx = await pipe.execute()
        return Opening(
            first_sighting=RequestDedupe.parse(stored, position),
            context=ContextStore.parse_get(raw_ctx),
        )

    async def update(
        self,
        ids: RequestIds,
        change: Change,
        *,
        current: AgentContext | None = UNREAD,
        claim: bool = False,
        stale_s: float = 0.0,
        complete_step: tuple[str, str] | None = None,
        follows: str | None = None,
    ) -> AgentContext | None:
        step = None
        if complete_step is not None:
            step_id, result = complete_step
            key = self.journal.key(ids.tenant_id, ids.session_id, step_id)
            step = (key, result, self.journal.retention_s)
        known: dict[str, Any] = {} if current is UNREAD else {"current": current}
        return await self.contexts.update(
            ids.tenant_id,
            ids.session_id,
            change,
            claim=ids.request_id if claim else None,
            stale_s=stale_s,
            complete_step=step,
            owner=ids.owner,
            follows=follows,
            **known,
        )

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None:
        return await self.contexts.get(tenant_id, session_id)

    async def begin_step(
        self, ids: RequestIds, step_id: str, *, rerun_unknown: bool = False
    ) -> StepState:
        return await self.journal.begin(
            ids.tenant_id, ids.session_id, step_id, rerun_unknown=rerun_unknown
        )

    async def begin_step_reading(
        self, ids: RequestIds, step_id: str
    ) -> tuple[StepState, AgentContext | None]:
        state, raw = await self.journal.begin_and_read(
            ids.tenant_id,
            ids.session_id,
            step_id,
            self.contexts.key(ids.tenant_id, ids.session_id),
        )
        return state, ContextStore.parse_get(raw)

    async def complete_step(self, ids: RequestIds, step_id: str, result: str) -> None:
        await self.journal.complete(ids.tenant_id, ids.session_id, step_id, result)

    async def mark_step_unknown(self, ids: RequestIds, step_id: str) -> None:
        await self.journal.mark_unknown(ids.tenant_id, ids.session_id, step_id)

    async def release(self, ids: RequestIds, response_id: str | None = None) -> None:
        await self.contexts.release(ids.tenant_id, ids.session_id, ids.request_id, response_id)
