"""Terminal outcomes: the AgentResponse, its MetricsEvent, and an ErrorEvent for failures.

Every finished request (completed or failed) produces exactly one AgentResponse and one
MetricsEvent; failures add one ErrorEvent. The response_id is derived from the request_id, so a
redelivered final step republishes the *same* response and clients drop the copy.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agentstream.observability import metrics as prom
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageDeps, utcnow

_RESPONSE_NS = uuid.UUID("6f1c2a4e-3b7d-5e8f-9a0b-1c2d3e4f5a6b")
_ERROR_NS = uuid.UUID("0b7e5c3a-1d2f-4e6a-8b9c-0d1e2f3a4b5c")


WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


CONTEXT_LOST_TEXT = "Your conversation context has expired. Please restate your request."


def response_id_for(request_id: str) -> str:
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


def error_event(
    deps: StageDeps,
    *,
    request_id: str,
    failure: Failure,
    session_id: str | None = None,
    tenant_id: str | None = None,
    origin: Inbound | None = None,
) -> Outbound:
    event = {
        "event_id": str(uuid.uuid5(_ERROR_NS, f"{request_id}:{failure.stage}:{failure.code}")),
        "request_id": request_id,
        "session_id": session_id,
        "tenant_id": tenant_id,
        "code": failure.code,
        "message": failure.message,
        "stage": failure.stage,
        "retriable": failure.retriable,
        "attempt": failure.attempt,
        "time": utcnow(),
        "origin_topic": origin.topic if origin else None,
        "origin_partition": origin.partition if origin else None,
        "origin_offset": origin.offset if origin else None,
        "cause": failure.cause,
    }
    key = (session_id or request_id).encode()
    return Outbound(
        topic=deps.settings.topics.errors,
        key=key,
        value=deps.codec.encode("ErrorEvent", event),
    )


def finish(
    deps: StageDeps,
    *,
    ids: RequestIds,
    progress: dict[str, Any],
    content: str,
    failure: Failure | None = None,
    confidence: float = 1.0,
    metadata: dict[str, str] | None = None,
    origin: Inbound | None = None,
) -> list[Outbound]:
    """Build the terminal records of a request."""
    now = utcnow()
    started: datetime = progress["started_at"]
    elapsed_ms = max(0.0, (now - started).total_seconds() * 1000.0)
    state = "ERROR" if failure else "COMPLETED"
    meta = dict(metadata or {})
    meta.setdefault("model", deps.llm.name)
    meta["worker"] = WORKER_ID
    if progress.get("degraded"):
        meta.setdefault("degraded", "true")
    usage = progress["usage"]
    response = {
        "response_id": response_id_for(ids.request_id),
        **ids.as_fields(),
        "content": content,
        "tool_calls": list(progress["tool_calls"]),
        "state": state,
        "confidence": 0.0 if failure else confidence,
        "execution_time_ms": int(elapsed_ms),
        "usage": usage,
        "error_code": failure.code if failure else None,
        "metadata": meta,
        "created_at": now,
    }
    tool_calls = progress["tool_calls"]
    metrics = {
        **ids.as_fields(),
        "outcome": state if failure is None else f"ERROR:{failure.code}",
        "error_code": failure.code if failure else None,
        "total_latency_ms": elapsed_ms,
        "stage_latency_ms": dict(progress["stage_ms"]),
        "llm_calls": progress["llm_calls"],
        "turns": progress["turn"] + 1,
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "cost_usd": usage["cost_usd"],
        "tool_calls": len(tool_calls),
        "tool_errors": sum(1 for c in tool_calls if c["is_error"]),
        "time": now,
        "tool_details": list(tool_calls),
        "model": meta.get("served_by") or meta.get("model"),
    }
    prom.REQUESTS.labels(state, failure.code if failure else "").inc()
    key = ids.session_id.encode()
    topics = deps.settings.topics
    out = [
        Outbound(
            topic=topics.responses, key=key, value=deps.codec.encode("AgentResponse", response)
        ),
        Outbound(topic=topics.metrics, key=key, value=deps.codec.encode("MetricsEvent", metrics)),
    ]
    if failure is not None:
        out.append(
            error_event(
                deps,
                request_id=ids.request_id,
                failure=failure,
                session_id=ids.session_id,
                tenant_id=ids.tenant_id,
                origin=origin,
            )
        )
    return out
