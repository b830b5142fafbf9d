"""OUTPUT_TOO_LARGE: a stage's output is larger than the broker accepts.

The runner measures every output record before it publishes (streams/message_size.py). When a
stage's output cannot be delivered (a 5 MB model completion, a batch of thousands of tool calls,
a turn carrying huge tool results) the request ends here instead: an ERROR response with code
``OUTPUT_TOO_LARGE``, its MetricsEvent and an ErrorEvent, and the session is released so the
user's next request is answered.
"""

from __future__ import annotations

import msgspec

from agentstream.exceptions import ErrorCode
from agentstream.processors.base import Inbound, RequestIds, StageDeps, StageResult, utcnow
from agentstream.processors.outcomes import Failure, finish
from agentstream.processors.progress import new_progress
from agentstream.schemas.contracts import (
    AgentRequest,
    ApprovalDecision,
    DelegationResult,
    Feedback,
    StageInput,
)
from agentstream.schemas.exceptions import SerializationError

CODE = ErrorCode.OUTPUT_TOO_LARGE
TEXT = (
    "The answer to this request was too large to deliver. Please ask for a shorter answer, "
    "or split the request into smaller ones."
)


def output_too_large(
    deps: StageDeps, *, stage: str, contract: type[StageInput], msg: Inbound, reason: str
) -> StageResult | None:
    """The terminal records of the request whose ``msg`` produced a too-large output, or None
    when ``msg`` is not a record of ``contract`` (the caller dead-letters it instead)."""
    try:
        event = deps.codec.decode_record(contract, msg.value)
    except SerializationError:
        return None
    if isinstance(
        event, Feedback | ApprovalDecision | DelegationResult
    ):  # not a turn: dead-lettered
        return None
    ids = RequestIds.of(event)
    if isinstance(event, AgentRequest):  # nothing accumulated yet
        progress = new_progress(utcnow(), len(event.message.encode()))
    else:  # the error answer must itself fit: it goes without the per-call tool details
        progress = msgspec.structs.replace(event.progress, tool_calls=[])
    failure = Failure(code=CODE, message=reason, stage=stage)
    return finish(
        deps,
        ids=ids,
        progress=progress,
        content=TEXT,
        failure=failure,
        request_metadata=event.metadata,
        origin=msg,
    )
