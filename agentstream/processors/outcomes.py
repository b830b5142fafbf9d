"""Terminal outcomes: the AgentResponse, its MetricsEvent, and an ErrorEvent for failures.

Every finished request (completed or failed) produces exactly one AgentResponse and one
MetricsEvent; failures add one ErrorEvent. The response_id is derived from the request_id, so a
redelivered final step republishes the *same* response and clients drop the copy. Building the
records has no side effects: the runner counts a finished request once its records are published
(:attr:`StageResult.finished`).
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import msgspec

from agentstream.agents import Agent
from agentstream.exceptions import ErrorCode
from agentstream.processors.base import (
    Inbound,
    Outbound,
    RequestIds,
    StageDeps,
    StageResult,
    utcnow,
)
from agentstream.processors.delegation import delegation_result
from agentstream.schemas.contracts import (
    AgentResponse,
    AgentState,
    ErrorEvent,
    MetricsEvent,
    RequestProgress,
)

_RESPONSE_NS = uuid.UUID("6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b")
_ERROR_NS = uuid.UUID("0b7e5c3a-1d2f-4e6a-8b9c-0d1e2f3a4b5c")


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


CONTEXT_LOST_TEXT = "Your conversation context has expired. Please restate your request."
FORBIDDEN_TEXT = "This session belongs to another user."


#: Keys the pipeline adds to a turn's metadata on the way (not the caller's, so not echoed).
PIPELINE_KEYS = frozenset({"degraded_reason"})


@functools.lru_cache(maxsize=4096)
def response_id_for(request_id: str) -> str:
    """The response id of ``request_id`` (stable: a redelivery republishes the same response).
    Remembered for the latest requests: a request asks for it twice (the write that records its
    answer, then the response), and a UUID5 costs a few microseconds."""
    return str(uuid.uuid5(_RESPONSE_NS, request_id))


@dataclass(frozen=True, kw_only=True)
class Failure:
    """Why a request failed, as the user and the operator see it."""

    code: str
    message: str
    stage: str
    retriable: bool = False
    attempt: int = 1
    cause: str | None = None
    """The failure behind ``code`` when the code is a consequence (``CIRCUIT_OPEN`` ->
    ``LLM_TIMEOUT``)."""


def session_release(
    deps: StageDeps, ids: RequestIds, response_id: str | None = None, *, held: bool = True
) -> Callable[[], Awaitable[None]]:
    """The step that frees the request's session for its next request and records the
    response that ended it (runs after publish; idempotent, retried until it succeeds).
    ``held``: the request had claimed the session (see ``SessionStore.release``)."""

    async def release() -> None:
        await deps.sessions.release(ids, response_id, held=held)

    return release


def error_event(
    deps: StageDeps,
    *,
    request_id: str,
    failure: Failure,
    session_id: str | None = None,
    tenant_id: str | None = None,
    origin: Inbound | None = None,
) -> Outbound:
    """The ErrorEvent of ``failure``, keyed by its session (the request's key). A record whose
    request is unknown (undecodable: ``request_id`` empty) keeps its own key, and its event_id
    is derived from its position instead of the request id."""
    seed = request_id or (origin.position if origin is not None else "")
    event = ErrorEvent(
        event_id=str(uuid.uuid5(_ERROR_NS, f"{seed}:{failure.stage}:{failure.code}")),
        request_id=request_id,
        session_id=session_id,
        tenant_id=tenant_id,
        code=failure.code,
        message=failure.message,
        stage=failure.stage,
        retriable=failure.retriable,
        attempt=failure.attempt,
        time=utcnow(),
        origin_topic=origin.topic if origin else None,
        origin_partition=origin.partition if origin else None,
        origin_offset=origin.offset if origin else None,
        cause=failure.cause,
    )
    key = (session_id or request_id).encode() or (origin.key if origin is not None else None)
    value = deps.codec.encode_record(event)
    return Outbound(topic=deps.settings.topics.errors, key=key, value=value)


def request_error_event(
    deps: StageDeps, ids: RequestIds, failure: Failure, origin: Inbound | None
) -> Outbound:
    """:func:`error_event` of a request whose ids are known."""
    return error_event(
        deps,
        request_id=ids.request_id,
        failure=failure,
        session_id=ids.session_id,
        tenant_id=ids.tenant_id,
        origin=origin,
    )


def finish(
    deps: StageDeps,
    *,
    ids: RequestIds,
    progress: RequestProgress,
    content: str,
    failure: Failure | None = None,
    confidence: float = 1.0,
    metadata: dict[str, str] | None = None,
    request_metadata: Mapping[str, str] | None = None,
    origin: Inbound | None = None,
    settle: bool = True,
    held: bool = True,
    agent: Agent | None = None,
) -> StageResult:
    """The terminal records of a request: its response, metrics and (on failure) error event.
    Once they are published the session is *settled*: freed if this request holds it, and the
    response recorded as one it knows (a later request may name it as the one it follows).
    ``settle=False`` for a request that may not touch the session (another user's, bad ids);
    ``held=False`` for one refused before it claimed its session (its response is recorded even
    where the session has no hash yet; a claimed request's only while its session lasts, except
    a ``CONTEXT_LOST`` answer: the user was told, and the request that follows it starts afresh).
    ``metadata`` is the pipeline's (model, cache, limits); ``request_metadata`` the request's,
    echoed. ``agent`` is the agent that served the request (None: it named an unknown one)."""
    response = _response(deps, ids, progress, content, failure, confidence, metadata)
    if agent is not None:
        response = msgspec.structs.replace(response, agent=agent.name, agent_version=agent.version)
    if request_metadata:
        echo = {k: v for k, v in request_metadata.items() if k not in PIPELINE_KEYS}
        response = msgspec.structs.replace(response, request_metadata=echo)
    if failure is not None and failure.code == ErrorCode.CONTEXT_LOST:
        held = False
    then = session_release(deps, ids, response.response_id, held=held) if settle else None
    topics = deps.settings.topics
    out = [
        Outbound(topic=topics.responses, key=ids.key, value=deps.codec.encode_record(response)),
        Outbound(
            topic=topics.metrics,
            key=ids.key,
            value=deps.codec.encode_record(_metrics(ids, progress, response, failure)),
        ),
    ]
    if failure is not None:
        out.append(request_error_event(deps, ids, failure, origin))
    child = delegation_result(response)
    if child is not None:  # a child request: its parent waits for this answer
        out.append(
            Outbound(
                topic=topics.delegation_results,
                key=child.session_id.encode(),
                value=deps.codec.encode_record(child),
            )
        )
    return StageResult(records=out, then=then, finished=response)


def _response(
    deps: StageDeps,
    ids: RequestIds,
    progress: RequestProgress,
    content: str,
    failure: Failure | None,
    confidence: float,
    metadata: dict[str, str] | None,
) -> AgentResponse:
    now = utcnow()
    elapsed_ms = max(0.0, (now - progress.started_at).total_seconds() * 1000.0)
    meta = dict(metadata or {})
    meta.setdefault("model", deps.llm.name)
    meta["worker"] = WORKER_ID
    if progress.degraded:
        meta.setdefault("degraded", "true")
    return AgentResponse(
        response_id=response_id_for(ids.request_id),
        request_id=ids.request_id,
        session_id=ids.session_id,
        user_id=ids.user_id,
        tenant_id=ids.tenant_id,
        content=content,
        tool_calls=list(progress.tool_calls),
        state=AgentState.ERROR if failure else AgentState.COMPLETED,
        confidence=0.0 if failure else confidence,
        execution_time_ms=int(elapsed_ms),
        usage=progress.usage,
        error_code=failure.code if failure else None,
        metadata=meta,
        created_at=now,
    )


def _metrics(
    ids: RequestIds, progress: RequestProgress, response: AgentResponse, failure: Failure | None
) -> MetricsEvent:
    usage = progress.usage
    tool_calls = progress.tool_calls
    meta = response.metadata
    return MetricsEvent(
        request_id=ids.request_id,
        session_id=ids.session_id,
        tenant_id=ids.tenant_id,
        user_id=ids.user_id,
        outcome=response.state if failure is None else f"ERROR:{failure.code}",
        error_code=failure.code if failure else None,
        total_latency_ms=max(0.0, (response.created_at - progress.started_at).total_seconds())
        * 1000.0,
        stage_latency_ms=dict(progress.stage_ms),
        llm_calls=progress.llm_calls,
        turns=progress.turn + 1,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost_usd=usage.cost_usd,
        tool_calls=len(tool_calls),
        tool_errors=sum(1 for c in tool_calls if c.is_error),
        time=response.created_at,
        tool_details=list(tool_calls),
        model=meta.get("served_by") or meta.get("model"),
        agent=response.agent,
        agent_version=response.agent_version,
    )
