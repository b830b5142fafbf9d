"""Delegation: a call of the tool ``agent.<name>`` is a child request through the pipeline.

The child is an :class:`AgentRequest` published to ``agent.requests`` (its id and its own
session are the call's step id, ``<parent request>:t<turn>:c<index>``), served like any other
request, by the agent it names (``AgentRequest.agent``). Its final response is the call's
result; a child that ends in ERROR is the call's error. The parent's batch is parked meanwhile
(state/parking.py, the same parking as approvals): no worker slot waits for the child.

Correlation rides in the child's metadata, which every turn carries and the response echoes
(``request_metadata``): ``agentstream.parent`` (parent request id),
``agentstream.parent-session`` (where the parent's batch is parked) and ``agentstream.chain``
(the agents from the root down to the child itself, comma-separated). The child's final
response is followed by a :class:`DelegationResult` to ``agent.delegation-results`` for the
parent (processors/delegation_results.py). A call is refused (an error result, no child) when
the agent is unknown, the chain already holds the agent (a cycle), or the child would be deeper
than :data:`MAX_DEPTH`. The child inherits the parent's deadline, tenant and user (so its usage is
booked to the same tenant budget).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from agentstream.agents import Agent, AgentCatalog
from agentstream.exceptions import ErrorCode
from agentstream.llm.base import ToolSpec
from agentstream.schemas.contracts import (
    AgentRequest,
    AgentResponse,
    AgentState,
    DelegationResult,
    ToolCall,
    ToolCallBatch,
)
from agentstream.state.journal import tool_step_id
from agentstream.state.session import RequestIds
from agentstream.tools.approval import DEFAULT_AGENT
from agentstream.tools.base import ToolOutcome

PREFIX = "agent."
PARENT = "agentstream.parent"
PARENT_SESSION = "agentstream.parent-session"
CHAIN = "agentstream.chain"
#: The deepest child: the root's child is depth 1.
MAX_DEPTH = 3


#: The arguments of every ``agent.<name>`` tool.
AGENT_TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"message": {"type": "string", "description": "What to ask the agent."}},
    "required": ["message"],
    "additionalProperties": False,
}


class AgentDirectory(Protocol):
    """The agents a call may name (the worker's agent catalog)."""

    def has(self, name: str | None) -> bool: ...


def agent_tools(
    agent: Agent, directory: AgentCatalog, allowed: Sequence[str] | None
) -> list[ToolSpec]:
    """The ``agent.<name>`` tools offered to ``agent``'s model: the agents its definition names
    exactly (a glob such as ``*`` lets the model call any agent it knows of, but offers none),
    within the request's ``allowed_tools`` when it has any."""
    specs = []
    for name in agent.delegates_to():
        tool = f"{PREFIX}{name}"
        if not directory.has(name) or (allowed and tool not in allowed):
            continue
        about = directory.get(name).description or f"Ask the {name} agent."
        specs.append(ToolSpec(name=tool, description=about, input_schema=AGENT_TOOL_SCHEMA))
    return specs


def is_delegation(call: ToolCall) -> bool:
    return call.name.startswith(PREFIX)


def lineage(batch: ToolCallBatch, agent: str | None) -> list[str]:
    """The agents from the root down to the one that asked for the calls (a child's request
    carries its whole chain, itself last; a root request is its own agent)."""
    chain = [a for a in batch.metadata.get(CHAIN, "").split(",") if a]
    return chain or [agent or DEFAULT_AGENT]


def refusal(call: ToolCall, chain: list[str], directory: AgentDirectory) -> ToolOutcome | None:
    """Why this delegation must not start (its error result), None when it may."""
    child = call.name.removeprefix(PREFIX)
    if not directory.has(child):
        return _error(f"unknown agent {child!r}", ErrorCode.TOOL_NOT_FOUND)
    if child in chain:
        path = " -> ".join([*chain, child])
        return _error(f"delegation cycle refused: {path}", ErrorCode.TOOL_ACCESS_DENIED)
    if len(chain) > MAX_DEPTH:
        return _error(
            f"delegation depth limit {MAX_DEPTH} reached ({' -> '.join(chain)})",
            ErrorCode.TOOL_ACCESS_DENIED,
        )
    if not isinstance(_message(call), str):
        return _error('an agent call takes {"message": "..."}', ErrorCode.TOOL_INVALID_ARGUMENTS)
    return None


def child_request(
    batch: ToolCallBatch, ids: RequestIds, index: int, chain: list[str]
) -> AgentRequest:
    call = batch.calls[index]
    child_id = tool_step_id(ids.request_id, batch.turn, index)
    return AgentRequest(
        request_id=child_id,
        session_id=child_id,
        user_id=ids.user_id,
        tenant_id=ids.tenant_id,
        message=str(_message(call)),
        metadata={
            PARENT: ids.request_id,
            PARENT_SESSION: ids.session_id,
            CHAIN: ",".join([*chain, call.name.removeprefix(PREFIX)]),
        },
        created_at=datetime.now(UTC),
        deadline=batch.deadline,
        agent=call.name.removeprefix(PREFIX),
    )


def delegation_result(response: AgentResponse) -> DelegationResult | None:
    """The record a child request's final response sends its parent; None for a request that
    is not a child."""
    meta = response.request_metadata
    parent, parent_session = meta.get(PARENT), meta.get(PARENT_SESSION)
    if not parent or not parent_session:
        return None
    failed = response.state != AgentState.COMPLETED
    return DelegationResult(
        request_id=parent,
        session_id=parent_session,
        user_id=response.user_id,
        tenant_id=response.tenant_id,
        child_request_id=response.request_id,
        response_id=response.response_id,
        content=response.content,
        is_error=failed,
        error_code=(response.error_code or ErrorCode.TOOL_FAILED) if failed else None,
        created_at=response.created_at,
    )


def stored_result(result: DelegationResult) -> str:
    """A child's answer as the stored resolution of its parent's call."""
    return json.dumps(
        {"content": result.content, "is_error": result.is_error, "error_code": result.error_code}
    )


def result_outcome(stored: dict[str, Any]) -> ToolOutcome:
    content = str(stored.get("content", ""))
    is_error = bool(stored.get("is_error"))
    return ToolOutcome(
        content=f"Error: the agent failed: {content}" if is_error else content,
        is_error=is_error,
        error_code=stored.get("error_code"),
    )


def _message(call: ToolCall) -> object:
    try:
        arguments = json.loads(call.arguments_json)
    except ValueError:
        return None
    return arguments.get("message") if isinstance(arguments, dict) else None


def _error(text: str, code: str) -> ToolOutcome:
    return ToolOutcome(content=f"Error: {text}", is_error=True, error_code=code)
