"""The session store on Redis, shared by every worker.

Built from the context hash (state/context.py: a Lua compare-and-set with the session claim),
the step journal (state/journal.py) and the dedupe marker (state/dedupe.py); the key layout is
in state/keys.py. Keys of one session share a Redis Cluster hash tag, so the scripts that touch a
context and a journal entry together run on one node.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from agentstream.state import context_scripts as lua
from agentstream.state.autopipe import AutoPipeline
from agentstream.state.context import AgentContext, ContextStore, StepDone, owner_of
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal, StepState
from agentstream.state.keys import Keys
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

_OUTCOMES = {
    lua.CLAIMED: ClaimOutcome.CLAIMED,
    lua.HELD: ClaimOutcome.HELD,
    lua.BUSY: ClaimOutcome.BUSY,
    lua.UNKNOWN: ClaimOutcome.HISTORY_LOST,
    lua.FORBIDDEN: ClaimOutcome.FORBIDDEN,
}


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
        autopipeline: bool = True,
    ) -> None:
        """``autopipeline``: the script calls of concurrent requests issued in one event-loop
        turn go to Redis as one pipeline (state/autopipe.py; ``state.redis_autopipeline``)."""
        scripts = AutoPipeline(redis) if autopipeline else None
        self.scripts = scripts
        self.contexts = ContextStore(redis, keys, ttl_s=context_ttl_s, scripts=scripts)
        # one server: dedupe and claim in one script (a cluster keeps them in different slots)
        register: Any = (scripts or redis).register_script
        cluster = isinstance(redis, RedisCluster)
        self._open = None if cluster else register(lua.OPEN)
        self._open_reading = None if cluster else register(lua.OPEN_READING)
        self.dedupe = RequestDedupe(redis, keys, ttl_s=dedupe_ttl_s)
        self.journal = StepJournal(
            redis, keys, retention_s=journal_retention_s, owner=owner, scripts=scripts
        )

    async def open(self, ids: RequestIds, position: str, claim: Claim) -> Opening:
        """The dedupe marker and the claim in one round trip: one script on a single server;
        on a Redis Cluster (the keys are in different slots) a pipeline, with the claim as a
        raw ``EVALSHA`` (a cluster pipeline cannot load scripts: a node that does not know it
        yet answers NOSCRIPT and the claim is sent again on its own)."""
        contexts = self.contexts
        key = contexts.key(ids.tenant_id, ids.session_id)
        args = contexts.claim_args(
            ids.request_id,
            owner_of(ids.tenant_id, ids.user_id),
            stale_s=claim.stale_s,
            follows=claim.follows,
            trusted=False,
        )
        marker = RequestDedupe.marker(position, ids.session_id)
        if self._open is not None:
            dedupe_key = self.dedupe.key(ids.tenant_id, ids.request_id)
            stored, code = await self._open(
                keys=[dedupe_key, key], args=[*args, marker, self.dedupe.ttl_s]
            )
        else:
            stored, code = await self._open_on_cluster(ids, marker, key, args)
        first = RequestDedupe.parse(stored, position)
        outcome = await self._outcome(ids, claim, int(code))
        if not first and outcome is ClaimOutcome.CLAIMED:
            await self.release(ids)  # a repeated request took a free session: give it back
        return Opening(first_sighting=first, claim=outcome)

    async def open_reading(
        self, ids: RequestIds, position: str, claim: Claim, step_id: str
    ) -> OpenReading:
        """One script on one server: the dedupe marker, the claim, and for a first sighting
        that holds its session the step's begin and the context (read by the claim's own
        ``HMGET``). On a Redis Cluster the marker is in another slot: :meth:`open`, then
        :meth:`begin_step_reading` once the marker says it is a first sighting."""
        if self._open_reading is None:
            return await open_then_begin(self, ids, position, claim, step_id)
        owner = owner_of(ids.tenant_id, ids.user_id)
        args = self.contexts.claim_args(
            ids.request_id, owner, stale_s=claim.stale_s, follows=claim.follows, trusted=False
        )
        step_key = self.journal.key(ids.tenant_id, ids.session_id, step_id)
        keys = [
            self.dedupe.key(ids.tenant_id, ids.request_id),
            self.contexts.key(ids.tenant_id, ids.session_id),
            step_key,
        ]
        marker = RequestDedupe.marker(position, ids.session_id)
        at = time.monotonic()
        reply = await self._open_reading(
            keys=keys,
            args=[*args, marker, self.dedupe.ttl_s, *self.journal.begin_args()[:3]],
        )
        first = RequestDedupe.parse(reply[0], position)
        if len(reply) > 2:  # claimed or held, first sighting: the step is begun
            state = self.journal.began(step_key, StepJournal.parse_begin(reply[2:4]), at)
            holder = f"{ids.request_id}|{args[1]}"
            ctx = ContextStore.parse_get([reply[4], reply[5], holder, owner], ids.session_id)
            return Opening(first_sighting=first, claim=_OUTCOMES[int(reply[1])]), state, ctx
        outcome = await self._outcome(ids, claim, int(reply[1]))
        if not first and outcome is ClaimOutcome.CLAIMED:
            await self.release(ids)  # a repeated request took a free session: give it back
        opening = Opening(first_sighting=first, claim=outcome)
        if first and outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.HELD):  # a legacy context
            return (opening, *await self.begin_step_reading(ids, step_id))
        return opening, None, None

    async def _open_on_cluster(
        self, ids: RequestIds, marker: str, key: str, args: list[str | int]
    ) -> tuple[Any, Any]:
        script = self.contexts.claim_script
        pipe = self.contexts.pipeline()
        self.dedupe.queue_first_sighting(pipe, ids.tenant_id, ids.request_id, marker)
        pipe.execute_command("EVALSHA", script.sha, 1, key, *args)
        _, stored, code = await pipe.execute(raise_on_error=False)
        if isinstance(stored, Exception):
            raise stored
        if isinstance(code, NoScriptError):
            code = await script(keys=[key], args=args)
        elif isinstance(code, Exception):
            raise code
        return stored, code

    async def claim(self, ids: RequestIds, claim: Claim) -> ClaimOutcome:
        code = await self.contexts.claim(
            ids.tenant_id,
            ids.session_id,
            ids.request_id,
            user_id=ids.user_id,
            stale_s=claim.stale_s,
            follows=claim.follows,
        )
        return await self._outcome(ids, claim, code)

    async def _outcome(self, ids: RequestIds, claim: Claim, code: int) -> ClaimOutcome:
        """The claim's outcome; a context written before owners were recorded is checked here
        (its owner is in the conversation) and claimed again, trusted."""
        if code == lua.LEGACY:
            ctx = await self.contexts.get(ids.tenant_id, ids.session_id)
            if ctx is not None and not ctx.owned_by(*ids.owner):
                return ClaimOutcome.FORBIDDEN
            code = await self.contexts.claim(
                ids.tenant_id,
                ids.session_id,
                ids.request_id,
                user_id=ids.user_id,
                stale_s=claim.stale_s,
                follows=claim.follows,
                trusted=True,
            )
        return _OUTCOMES[code]

    async def update(
        self,
        ids: RequestIds,
        change: Change,
        *,
        current: AgentContext | None = UNREAD,
        complete_step: tuple[str, str] | None = None,
        ends_with: str | None = None,
    ) -> AgentContext | None:
        step = None
        if complete_step is not None:
            step_id, result = complete_step
            key = self.journal.key(ids.tenant_id, ids.session_id, step_id)
            step = StepDone(key, result, self.journal.retention_s, self.journal.ttl_right(key))
        known: dict[str, Any] = {} if current is UNREAD else {"current": current}
        return await self.contexts.update(
            ids.tenant_id,
            ids.session_id,
            change,
            complete_step=step,
            owner=ids.owner,
            writer=ids.request_id,
            ends=(ids.request_id, ends_with) if ends_with is not None else None,
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
        return state, ContextStore.parse_get(raw, ids.session_id)

    async def complete_step(self, ids: RequestIds, step_id: str, result: str) -> None:
        await self.journal.complete(ids.tenant_id, ids.session_id, step_id, result)

    async def mark_step_unknown(self, ids: RequestIds, step_id: str) -> None:
        await self.journal.mark_unknown(ids.tenant_id, ids.session_id, step_id)

    async def release(
        self, ids: RequestIds, response_id: str | None = None, *, held: bool = True
    ) -> None:
        await self.contexts.release(
            ids.tenant_id, ids.session_id, ids.request_id, response_id, held=held
        )
