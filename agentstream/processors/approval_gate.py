"""Human approval in the tool stage: which calls of a batch wait for a person, their decisions,
and what the model is told. The parking itself is processors/parking_gate.py.

Before any call of a batch runs, the calls that ``tools.approvals`` gates (per tool glob, tenant
and agent) are looked up: each has an approval id (its step id, ``<request>:t<turn>:c<index>``).
When every one is decided, the batch runs: approved calls as usual (journaled, so exactly once),
denied and timed-out calls answered with a ``TOOL_APPROVAL_DENIED`` error result that tells the
model the call was denied. Otherwise the batch is parked in Redis (state/parking.py) and one
:class:`ApprovalRequest` per undecided call goes to ``agent.approvals`` (the only place its
arguments are shown); the batch's offset is then acknowledged. A redelivered batch that is
still parked publishes its requests again (same approval ids: approvers see one approval).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from agentstream.exceptions import ErrorCode
from agentstream.processors.base import Inbound, RequestIds
from agentstream.schemas.contracts import ApprovalRequest, ToolCall, ToolCallBatch
from agentstream.schemas.dead_letter import RETRY_HEADERS
from agentstream.state.journal import tool_step_id
from agentstream.state.parking import ParkedRecord
from agentstream.tools.approval import approval_required
from agentstream.tools.base import ToolOutcome
from agentstream.tools.settings import ApprovalRule

#: Header on a batch published again after its approvals: the park it comes from.
RESUMED_FROM = "agentstream-resumed-from"
APPROVE, DENY, TIMEOUT = "APPROVE", "DENY", "TIMEOUT"
DECISIONS = (APPROVE, DENY, TIMEOUT)
#: The approver id of a decision the pipeline takes when nobody decided in time.
TIMEOUT_APPROVER = "agentstream:timeout"


def park_id(request_id: str, turn: int) -> str:
    """The park of a request's tool batch of ``turn``."""
    return f"{request_id}:t{turn}"


def park_of(approval_id: str) -> str:
    """The park an approval id belongs to (its step id without the call index)."""
    return approval_id.rsplit(":", 1)[0]


def resolution(decision: str, approver_id: str, reason: str | None) -> str:
    """A decision as stored for its approval."""
    return json.dumps({"decision": decision, "approver_id": approver_id, "reason": reason})


def decision_of(stored: str) -> str:
    value = json.loads(stored).get("decision")
    return value if isinstance(value, str) else DENY


def denial(stored: str, timeout_s: float) -> ToolOutcome | None:
    """The call's result for the model when the stored decision is not an approval."""
    data: dict[str, Any] = json.loads(stored)
    decision = data.get("decision")
    if decision == APPROVE:
        return None
    if decision == TIMEOUT:
        text = f"no approval decision within {timeout_s:g} s"
    else:
        reason = data.get("reason")
        text = f"an approver denied it ({reason})" if reason else "an approver denied it"
    return ToolOutcome(
        content=f"Error: this call was denied and did not run: {text}",
        is_error=True,
        error_code=ErrorCode.TOOL_APPROVAL_DENIED,
    )


def approval_request(
    batch: ToolCallBatch, ids: RequestIds, index: int, due_ms: int
) -> ApprovalRequest:
    call = batch.calls[index]
    return ApprovalRequest(
        approval_id=tool_step_id(ids.request_id, batch.turn, index),
        request_id=ids.request_id,
        session_id=ids.session_id,
        user_id=ids.user_id,
        tenant_id=ids.tenant_id,
        turn=batch.turn,
        call_id=call.call_id,
        tool=call.name,
        arguments_json=call.arguments_json,
        requested_at=datetime.now(UTC),
        expires_at=datetime.fromtimestamp(due_ms / 1000, UTC),
        agent=agent_of(batch),
    )


def gated(
    rules: Sequence[ApprovalRule], batch: ToolCallBatch, runnable: Callable[[ToolCall], bool]
) -> list[int]:
    """The indices of the calls that need a person's approval (of those that may run at all:
    a call refused anyway is not put to approvers)."""
    if not rules:
        return []
    agent = agent_of(batch)
    return [
        i
        for i, call in enumerate(batch.calls)
        if approval_required(rules, tool=call.name, tenant_id=batch.tenant_id, agent=agent)
        and runnable(call)
    ]


def parked_record(msg: Inbound, park: str) -> ParkedRecord:
    """The batch as consumed, to publish again when decided (without retry-tier headers)."""
    headers = [(k, v) for k, v in msg.headers if k not in RETRY_HEADERS and k != RESUMED_FROM]
    headers.append((RESUMED_FROM, park.encode()))
    return ParkedRecord(topic=msg.topic, key=msg.key, value=msg.value, headers=headers)


def agent_of(batch: ToolCallBatch) -> str | None:
    """The agent that asked for the calls: the batch's ``agent`` once turns carry it (issue
    17), else None (the default agent)."""
    agent = getattr(batch, "agent", None)
    return agent if isinstance(agent, str) else None
