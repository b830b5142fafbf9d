"""OUTPUT_TOO_LARGE: a stage's output is larger than the broker accepts.

The runner measures every output record before it publishes (streams/message_size.py). When a
stage's output cannot be delivered (a 5 MB model completion, a batch of thousands of tool calls,
a turn carrying huge tool results) the request ends here instead: an ERROR response with code
``OUTPUT_TOO_LARGE``, its MetricsEvent and an ErrorEvent, and the session is released so the
user's next request is answered.
"""

from __future__ import annotations

from typing import Any

from agentstream.processors.base import Inbound, RequestIds, StageDeps, StageResult, utcnow
from agentstream.processors.outcomes import Failure, finish
from agentstream.processors.progress import new_progress
from agentstream.schemas.exceptions import SerializationError

CODE = "OUTPUT_TOO_LARGE"
TEXT = (
    "The answer to this request was too large to deliver. Please ask for a shorter answer, "
    "or split the request into smaller ones."
)


def output_too_large(
    deps: StageDeps, *, stage: str, schema: str, msg: Inbound, reason: str
) -> StageResult | None:
    """The terminal records of the request whose ``msg`` produced a too-large output, or None
    when ``msg`` is not a request of ``schema`` (the caller dead-letters it instead)."""
    try:
        event: dict[str, Any] = deps.codec.decode(schema, msg.value)
        ids = RequestIds.of(event)
    except (SerializationError, KeyError, TypeError):
        return None
    progress = event.get("progress")
    if not isinstance(progress, dict):  # an AgentRequest: nothing accumulated yet
        progress = new_progress(utcnow(), len(str(event.get("message", "")).encode()))
    # the error answer must itself fit: it goes without the per-call tool details
    progress = {**progress, "tool_calls": []}
    failure = Failure(code=CODE, message=reason, stage=stage)
    records = finish(deps, ids=ids, progress=progress, content=TEXT, failure=failure, origin=msg)

    async def release() -> None:
        await deps.contexts.release(ids.tenant_id, ids.session_id, ids.request_id)

    return StageResult(records=records, then=release)
