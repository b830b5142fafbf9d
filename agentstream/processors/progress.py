"""RequestProgress: the per-request accumulator that travels with a request between stages
(the contract and its update methods are in :mod:`agentstream.schemas.contracts`)."""

from __future__ import annotations

from datetime import datetime

from agentstream.schemas.contracts import (
    GenerationTurn,
    RequestProgress,
    ToolCallBatch,
    ToolCallSummary,
    ToolResult,
)


def new_progress(started_at: datetime, message_bytes: int) -> RequestProgress:
    return RequestProgress(started_at=started_at, message_bytes=message_bytes)


def failed_tools(progress: RequestProgress) -> list[str]:
    """Names of the tools whose calls failed so far in this request, sorted."""
    return sorted({c.name for c in progress.tool_calls if c.is_error})


def call_result(
    progress: RequestProgress,
    *,
    turn: int,
    call_id: str,
    name: str,
    content: str,
    is_error: bool,
    error_code: str | None,
    duration_ms: float,
) -> ToolResult:
    """A tool call's result for the model; its summary is added to the request's progress."""
    progress.tool_calls.append(
        ToolCallSummary(
            call_id=call_id,
            name=name,
            turn=turn,
            is_error=is_error,
            error_code=error_code,
            duration_ms=duration_ms,
        )
    )
    return ToolResult(
        call_id=call_id,
        name=name,
        content=content,
        is_error=is_error,
        error_code=error_code,
        duration_ms=duration_ms,
    )


def next_turn(
    source: GenerationTurn | ToolCallBatch,
    results: list[ToolResult],
    metadata: dict[str, str] | None = None,
) -> GenerationTurn:
    """The request's next model turn, carrying these tool results."""
    return GenerationTurn(
        request_id=source.request_id,
        session_id=source.session_id,
        user_id=source.user_id,
        tenant_id=source.tenant_id,
        turn=source.turn + 1,
        allowed_tools=source.allowed_tools,
        metadata=source.metadata if metadata is None else metadata,
        tool_results=results,
        progress=source.progress,
        deadline=source.deadline,
        stream=source.stream,
        agent=source.agent,
    )


__all__ = [
    "RequestProgress",
    "ToolCallSummary",
    "call_result",
    "failed_tools",
    "new_progress",
    "next_turn",
]
