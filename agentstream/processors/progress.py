"""RequestProgress: the per-request accumulator that travels with a request between stages
(the contract and its update methods are in :mod:`agentstream.schemas.contracts`)."""

from __future__ import annotations

from datetime import datetime

from agentstream.schemas.contracts import RequestProgress, ToolCallSummary


def new_progress(started_at: datetime, message_bytes: int) -> RequestProgress:
    return RequestProgress(started_at=started_at, message_bytes=message_bytes)


def failed_tools(progress: RequestProgress) -> list[str]:
    """Names of the tools whose calls failed so far in this request, sorted."""
    return sorted({c.name for c in progress.tool_calls if c.is_error})


__all__ = ["RequestProgress", "ToolCallSummary", "failed_tools", "new_progress"]
