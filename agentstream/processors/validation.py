"""Validation stage: agent.requests -> agent.generation.

Decode (undecodable -> dead letter), validate, sanitize, dedupe by request_id, admission (load
shedding, rate limits, budgets, the response cache), claim the session and record the user turn,
publish turn 0. A request that is refused is answered with an ERROR response and an ErrorEvent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime

from agentstream.agents import Agent
from agentstream.exceptions import ErrorCode
from agentstream.observability.logging import get_logger
from agentstream.processors.base import (
    Handed,
    Inbound,
    Outbound,
    RequestIds,
    StageResult,
    ms_since,
    utcnow,
)
from agentstream.processors.outcomes import Failure, finish, request_error_event
from agentstream.processors.progress import new_progress
from agentstream.processors.sanitize import sanitize_text, valid_id
from agentstream.processors.stage import Stage
from agentstream.schemas.contracts import (
    AgentRequest,
    GenerationTurn,
    RequestProgress,
)
from agentstream.schemas.dead_letter import first_position
from agentstream.state.journal import llm_step_id
from agentstream.state.session import Claim, ClaimOutcome, Opening

STAGE = "validation"
log = get_logger(__name__)
HISTORY_LOST_TEXT = (
    "The earlier part of this conversation is no longer available, so this request was not run "
    "without it. Please restate what you need; your next message starts afresh."
)
_ID_RULE = "must be 1-128 characters of letters, digits and ._:@- starting with a letter or digit"


@dataclass(kw_only=True)
class RequestRejected(Exception):
    """The request is answered now with an ERROR response of this code."""

    code: str
    message: str
    retriable: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    settle: bool = True
    """The refusal is recorded in the session (False: another user's session, or bad ids)."""

    def __post_init__(self) -> None:
        super().__init__(self.message)


@dataclass(frozen=True, kw_only=True)
class _Valid:
    """A request that passed the checks: its sanitized message and de-duplicated tools."""

    message: str
    allowed: list[str]
    agent: Agent


class ValidationStage(Stage[AgentRequest]):
    stage = STAGE
    contract = AgentRequest

    async def _run(
        self, msg: Inbound, request: AgentRequest, ids: RequestIds, started: datetime
    ) -> StageResult:
        progress = new_progress(started, len(request.message.encode()))
        agent: Agent | None = None
        claimed = False
        try:
            agent = self._agent(request)
            valid = self._validate(request, agent)
            claim = Claim(
                stale_s=self.deps.settings.limits.session_busy_timeout_s,
                follows=request.previous_response_id,
            )
            opening, handed = await self._open(ids, first_position(msg), claim)
            if not opening.first_sighting:
                return self._duplicate(msg, ids)
            busy = _claimed(opening.claim, self.deps.settings.limits.double_text)
            claimed = not busy
            cached = await self._admit(msg, ids, progress, request, valid, held=claimed)
            if cached is not None:
                return cached
            if busy:
                async with self.deps.cancellations.abortable(ids.request_id):
                    await self._wait_for_session(ids, claim)
        except RequestRejected as rej:
            log.info("request refused", code=rej.code)
            return self._refuse(msg, ids, progress, rej, request.metadata, agent, held=claimed)
        progress.add_stage_time(STAGE, ms_since(started))
        turn = GenerationTurn(
            request_id=ids.request_id,
            session_id=ids.session_id,
            user_id=ids.user_id,
            tenant_id=ids.tenant_id,
            turn=0,
            allowed_tools=valid.allowed,
            metadata=request.metadata,
            progress=progress,
            deadline=request.deadline,
            message=valid.message,
            stream=_streams(request, valid.agent, self.deps.settings.streaming.default),
            agent=valid.agent.name,
        )
        topic = self.deps.settings.topics.generation
        value = self.deps.codec.encode_record(turn)
        if handed is not None:
            handed.event = turn
        record = Outbound(topic=topic, key=ids.key, value=value, carried=handed)
        return StageResult(records=[record])

    async def _open(
        self, ids: RequestIds, position: str, claim: Claim
    ) -> tuple[Opening, Handed | None]:
        """Dedupe and claim; when this worker runs the first turn itself (local hand-over),
        also that turn's journal step and the context, in the same round trip."""
        sessions = self.deps.sessions
        if not self.deps.first_turn_here:
            return await sessions.open(ids, position, claim), None
        step = llm_step_id(ids.request_id, 0)
        opening, state, ctx = await sessions.open_reading(ids, position, claim, step)
        if state is None:
            return opening, Handed(event=None)
        return opening, Handed(event=None, step_id=step, step_state=state, context=ctx)

    def _refuse(
        self,
        msg: Inbound,
        ids: RequestIds,
        progress: RequestProgress,
        rej: RequestRejected,
        request_metadata: dict[str, str],
        agent: Agent | None,
        *,
        held: bool,
    ) -> StageResult:
        """Answer the request now with an ERROR response (plus its ErrorEvent and metrics).
        ``held``: it had claimed its session before it was refused."""
        failure = Failure(code=rej.code, message=rej.message, stage=STAGE, retriable=rej.retriable)
        return finish(
            self.deps,
            ids=ids,
            progress=progress,
            content=rej.message,
            failure=failure,
            metadata=rej.metadata,
            request_metadata=request_metadata,
            origin=msg,
            settle=rej.settle,
            held=held,
            agent=agent,
        )

    def _duplicate(self, msg: Inbound, ids: RequestIds) -> StageResult:
        """A repeated request_id ends with a DUPLICATE_REQUEST error event, no second answer."""
        log.info("duplicate request dropped")
        dup = Failure(
            code=ErrorCode.DUPLICATE_REQUEST,
            stage=STAGE,
            message="request_id already accepted; the repeat was not run",
        )
        return StageResult(records=[request_error_event(self.deps, ids, dup, msg)])

    async def _admit(
        self,
        msg: Inbound,
        ids: RequestIds,
        progress: RequestProgress,
        request: AgentRequest,
        valid: _Valid,
        *,
        held: bool,
    ) -> StageResult | None:
        """Load shedding, rate limits and budgets (RequestRejected), then the response cache:
        a cached answer ends the request here."""
        deps = self.deps
        shed = deps.load.overloaded() if deps.load is not None else None
        if shed is not None:  # RESOURCE_EXHAUSTED: refuse new work, answer at once
            log.warning("shedding load", reason=shed)
            raise RequestRejected(
                code=ErrorCode.RESOURCE_EXHAUSTED,
                message="The service is overloaded right now; please try again in a few seconds.",
                retriable=True,
                metadata={"retry_after_s": "5"},
            )
        if deps.admission is not None:  # rate limits, budget, then the response cache
            denial, cached = await deps.admission.admit(
                request_id=ids.request_id,
                session_id=ids.session_id,
                user_id=ids.user_id,
                tenant_id=ids.tenant_id,
                message=valid.message,
                allowed_tools=valid.allowed,
                metadata=request.metadata,
                agent=valid.agent,
            )
            if denial is not None:
                log.info("request not admitted", code=denial.code, limit=denial.limit)
                raise RequestRejected(
                    code=denial.code,
                    message=denial.message,
                    retriable=denial.retriable,
                    metadata=dict(denial.metadata or {}),
                )
            if cached is not None:
                log.info("answered from the response cache")
                return finish(
                    deps,
                    ids=ids,
                    progress=progress,
                    content=cached.content,
                    confidence=cached.confidence,
                    metadata=cached.metadata(),
                    request_metadata=request.metadata,
                    held=held,
                    agent=valid.agent,
                )
        if deps.settings.degradation.cached_only:  # no cached answer above: refuse
            raise RequestRejected(
                code=ErrorCode.SERVICE_DEGRADED,
                message="Only cached answers are available right now; please try again later.",
                retriable=True,
            )
        return None

    def _agent(self, request: AgentRequest) -> Agent:
        """The agent the request names (None: the default); UNKNOWN_AGENT when there is none."""
        catalog = self.deps.catalog
        if not catalog.has(request.agent):
            name = (request.agent or "")[:64]
            raise RequestRejected(code=ErrorCode.UNKNOWN_AGENT, message=f"unknown agent {name!r}")
        return catalog.get(request.agent)

    def _validate(self, request: AgentRequest, agent: Agent) -> _Valid:
        limits = self.deps.settings.limits
        ids = RequestIds.of(request)
        for name, value in (
            ("request_id", ids.request_id),
            ("session_id", ids.session_id),
            ("user_id", ids.user_id),
            ("tenant_id", ids.tenant_id),
        ):
            if not valid_id(value):
                raise RequestRejected(
                    code=ErrorCode.INVALID_REQUEST, message=f"{name} {_ID_RULE}", settle=False
                )
        size = len(request.message.encode())
        if size > limits.max_message_bytes:
            raise RequestRejected(
                code=ErrorCode.MESSAGE_TOO_LARGE,
                message=f"message is {size} bytes; the limit is {limits.max_message_bytes} bytes",
            )
        message = sanitize_text(request.message)
        if not message:
            raise RequestRejected(code=ErrorCode.EMPTY_MESSAGE, message="message is empty")
        metadata = request.metadata
        if len(metadata) > limits.max_metadata_entries or any(
            len(k.encode()) + len(v.encode()) > limits.max_metadata_value_bytes
            for k, v in metadata.items()
        ):
            raise RequestRejected(
                code=ErrorCode.INVALID_REQUEST, message="metadata has too many or too large entries"
            )
        allowed = self._allowed_tools(request, agent)
        if request.deadline is not None and request.deadline <= utcnow():
            raise RequestRejected(
                code=ErrorCode.DEADLINE_EXCEEDED,
                message="the request's deadline has already passed",
            )
        return _Valid(message=message, allowed=allowed, agent=agent)

    def _allowed_tools(self, request: AgentRequest, agent: Agent) -> list[str]:
        allowed = list(dict.fromkeys(request.allowed_tools))
        if len(allowed) > self.deps.settings.limits.max_allowed_tools:
            raise RequestRejected(code=ErrorCode.INVALID_REQUEST, message="too many allowed_tools")
        unknown = [t for t in allowed if not self.deps.tools.has(t)]
        if unknown:
            raise RequestRejected(
                code=ErrorCode.UNKNOWN_TOOL, message=f"unknown tool(s): {', '.join(unknown)}"
            )
        foreign = [t for t in allowed if not agent.offers(t)]
        if foreign:
            raise RequestRejected(
                code=ErrorCode.UNKNOWN_TOOL,
                message=f"agent {agent.name!r} does not offer tool(s): {', '.join(foreign)}",
            )
        return allowed

    async def _wait_for_session(self, ids: RequestIds, claim: Claim) -> None:
        """The ``queue`` double-text policy: this request waits while an earlier one of its
        session runs (only this key's chain waits; other sessions keep flowing)."""
        delay = 0.005
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
            outcome = await self.deps.sessions.claim(ids, claim)
            if not _claimed(outcome, "queue"):
                return


def _claimed(outcome: ClaimOutcome, double_text: str) -> bool:
    """Whether the request must still wait for its session (True: BUSY under ``queue``); a
    refusal (RequestRejected) for an outcome that ends the request. The claim also checked
    that the session knows the response the request follows: if not, its history was lost
    (expired, or Redis lost data) and the request is refused with ``CONTEXT_LOST`` rather
    than run without it."""
    if outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.HELD):
        return False
    if outcome is ClaimOutcome.FORBIDDEN:
        raise RequestRejected(
            code=ErrorCode.SESSION_FORBIDDEN,
            message="this session belongs to another user",
            settle=False,
        )
    if outcome is ClaimOutcome.HISTORY_LOST:
        raise RequestRejected(code=ErrorCode.CONTEXT_LOST, message=HISTORY_LOST_TEXT)
    if double_text == "reject":
        raise RequestRejected(
            code=ErrorCode.SESSION_BUSY,
            message="this session is still answering an earlier request; send again when it "
            "has finished",
        )
    return True


def _streams(request: AgentRequest, agent: Agent, default: bool) -> bool:
    """The request's choice, else its agent's, else the ``streaming.default`` setting."""
    if request.stream is not None:
        return request.stream
    return default if agent.stream is None else agent.stream
