"""The session store: what the stages ask of session state, in their own words.

A request *opens*: its dedupe marker is set and its session *claimed* (the double-text policy:
one request at a time) in one round trip, without reading the conversation. It runs *steps*
that are journaled so a redelivery never repeats one, *updates* the conversation (the user's
message is recorded with the first answer, in one write), and finally *releases* the session
(the write that records the final answer does it). Every claim and write checks that the session
belongs to the request's (tenant, user).

Two implementations: :class:`agentstream.state.redis_session.RedisSessionStore` (the Lua scripts
and the key layout, shared by all workers) and :class:`agentstream.state.memory.MemorySessionStore`
(one process, no Redis: for ``agentstream.testing`` and unit tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from agentstream.state.context import AgentContext
from agentstream.state.journal import StepState

Change = Callable[[AgentContext | None], AgentContext | None]
#: Passed as ``current`` when the caller has not read the context (the store reads it).
UNREAD: Any = object()


class _HasIds(Protocol):
    @property
    def request_id(self) -> str: ...
    @property
    def session_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def tenant_id(self) -> str: ...


@dataclass(frozen=True, kw_only=True)
class RequestIds:
    """The ids of one request in one session."""

    request_id: str
    session_id: str
    user_id: str
    tenant_id: str

    @classmethod
    def of(cls, event: _HasIds) -> RequestIds:
        return cls(
            request_id=event.request_id,
            session_id=event.session_id,
            user_id=event.user_id,
            tenant_id=event.tenant_id,
        )

    @property
    def owner(self) -> tuple[str, str]:
        """Who a session belongs to: (tenant_id, user_id)."""
        return (self.tenant_id, self.user_id)

    @property
    def key(self) -> bytes:
        """The Kafka key of every record of the request: its session."""
        return self.session_id.encode()


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    """The session was free: the request holds it now."""
    HELD = "held"
    """The request already held it (a redelivery)."""
    BUSY = "busy"
    """Another request of the session is running (and not stale): nothing changed."""
    HISTORY_LOST = "history_lost"
    """The session does not know the response the request follows: nothing changed."""
    FORBIDDEN = "forbidden"
    """The session belongs to another (tenant, user): nothing changed."""


@dataclass(frozen=True, kw_only=True)
class Claim:
    """How a request claims its session."""

    stale_s: float
    """A claim older than this is abandoned (``limits.session_busy_timeout_s``)."""
    follows: str | None = None
    """The response id the session must know (``AgentRequest.previous_response_id``)."""


@dataclass(frozen=True, kw_only=True)
class Opening:
    """What :meth:`SessionStore.open` found."""

    first_sighting: bool
    """False: this request_id was accepted before from another record (a repeat)."""
    claim: ClaimOutcome


#: What :meth:`SessionStore.open_reading` found: the opening, and for a first sighting that
#: holds its session, the step's journal state and the session's context (else None, None).
OpenReading = tuple[Opening, StepState | None, AgentContext | None]


class SessionStore(Protocol):
    async def open(self, ids: RequestIds, position: str, claim: Claim) -> Opening:
        """Mark ``ids.request_id`` as seen at ``position`` (a record's topic/partition/offset)
        and claim its session, in one round trip. The same position again is a redelivery (a
        first sighting still); another position is a repeated request, and a claim it took is
        given back (the caller drops it)."""
        ...

    async def open_reading(
        self, ids: RequestIds, position: str, claim: Claim, step_id: str
    ) -> OpenReading:
        """:meth:`open`, then, for a first sighting that holds its session (claimed, or held
        by this request already), :meth:`begin_step_reading` of ``step_id``: in one round trip
        where the store can (one Redis server)."""
        ...

    async def claim(self, ids: RequestIds, claim: Claim) -> ClaimOutcome:
        """Claim the session again (after BUSY, under the ``queue`` double-text policy)."""
        ...

    async def update(
        self,
        ids: RequestIds,
        change: Change,
        *,
        current: AgentContext | None = UNREAD,
        complete_step: tuple[str, str] | None = None,
        ends_with: str | None = None,
    ) -> AgentContext | None:
        """Apply ``change`` atomically (it may run more than once: keep it pure). ``current``:
        a context just read (skips the first read). ``complete_step``: (step id, result) of a
        journal step marked done in the same write. ``ends_with``: the response id that ends
        the request: the write also releases the session and records it (as
        :meth:`release`). Raises SessionForbiddenError when the session is another (tenant,
        user)'s."""
        ...

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None: ...

    async def begin_step(
        self, ids: RequestIds, step_id: str, *, rerun_unknown: bool = False
    ) -> StepState:
        """Look the step up and, unless it is done (or unknown and not re-run), take it."""
        ...

    async def begin_step_reading(
        self, ids: RequestIds, step_id: str
    ) -> tuple[StepState, AgentContext | None]:
        """:meth:`begin_step` and the session's context, in one round trip: an empty context
        for a session that exists (claimed) but has no conversation yet, None for a session
        that is gone (expired, or Redis lost it)."""
        ...

    async def complete_step(self, ids: RequestIds, step_id: str, result: str) -> None: ...

    async def mark_step_unknown(self, ids: RequestIds, step_id: str) -> None:
        """The step's outcome cannot be known (dead-lettered): later deliveries are dropped."""
        ...

    async def release(
        self, ids: RequestIds, response_id: str | None = None, *, held: bool = True
    ) -> None:
        """The request finished: the session's next request may start. ``response_id``: the
        response that ended it, recorded among the session's latest responses (what a later
        request's ``follows`` is checked against). ``held``: the request had claimed the
        session; its response is then recorded only while the session still holds it or has a
        conversation, so a session lost meanwhile answers the next request ``CONTEXT_LOST``.
        Idempotent; frees the session only if ``ids.request_id`` holds it."""
        ...


async def open_then_begin(
    store: SessionStore, ids: RequestIds, position: str, claim: Claim, step_id: str
) -> OpenReading:
    """:meth:`SessionStore.open_reading` in two calls (a store that cannot do it in one)."""
    opening = await store.open(ids, position, claim)
    if not opening.first_sighting or opening.claim not in (ClaimOutcome.CLAIMED, ClaimOutcome.HELD):
        return opening, None, None
    state, ctx = await store.begin_step_reading(ids, step_id)
    return opening, state, ctx
