"""The pipeline's contracts as typed records: one msgspec Struct per Avro record.

The ``.avsc`` files in ``schemas/avro/`` are the wire contract (what other languages read and
write); these Structs are the same records in Python. ``tests/test_contracts.py`` checks that
every Struct has exactly its schema's fields, with the same optionality and defaults.
The codec (:class:`agentstream.schemas.codec.AvroCodec`) encodes and decodes them directly:
``codec.encode_record(turn)``, ``codec.decode_record(GenerationTurn, data)``.

msgspec Structs, not dataclasses: converting a decoded record to a Struct and back costs about
1 us each; ``dataclasses.asdict`` alone costs 35 us per GenerationTurn (measured; see
docs/architecture.md). Records are frozen; ``RequestProgress`` is the one accumulator a stage
updates in place before it is sent on.

Timestamps are timezone-aware UTC ``datetime`` objects.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar

import msgspec

__all__ = [
    "AgentRequest",
    "AgentResponse",
    "AgentState",
    "ApprovalAudit",
    "ApprovalDecision",
    "ApprovalRequest",
    "CancelRequest",
    "Contract",
    "DelegationResult",
    "ErrorEvent",
    "Feedback",
    "GenerationTurn",
    "MetricsEvent",
    "RequestProgress",
    "StageInput",
    "StreamDelta",
    "ToolCall",
    "ToolCallBatch",
    "ToolCallSummary",
    "ToolResult",
    "Usage",
]


# Avro int / long ranges: fastavro reads any varint up to 64 bits into a field, so a record whose
# "int" is out of range decodes but could never be written again; converting to the typed
# contract refuses it (an undecodable record) before any stage acts on it.
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class AgentState(StrEnum):
    """``io.agentstream.AgentState``: where a session is."""

    IDLE = "IDLE"
    THINKING = "THINKING"
    EXECUTING = "EXECUTING"
    ERROR = "ERROR"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    """Stopped by a cancel request (``CancelRequest``); the response's ``error_code`` is
    ``CANCELLED``, so a reader whose schema predates the symbol (and reads the enum's default,
    ERROR) still sees why."""


class Contract(msgspec.Struct, frozen=True, kw_only=True):
    """A top-level record encoded on a topic; ``schema`` is its contract's short name."""

    schema: ClassVar[str]


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: Int64 = 0
    completion_tokens: Int64 = 0
    cost_usd: float = 0.0


class ToolCallSummary(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    name: str
    turn: Int32
    is_error: bool
    error_code: str | None = None
    duration_ms: float


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    name: str
    arguments_json: str


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    call_id: str
    name: str
    content: str
    is_error: bool
    error_code: str | None = None
    duration_ms: float


class RequestProgress(msgspec.Struct, kw_only=True):
    """The per-request accumulator travelling with a request between stages (mutable: a stage
    adds its time, usage and tool calls, then sends it on)."""

    started_at: datetime
    message_bytes: Int32
    turn: Int32 = 0
    llm_calls: Int32 = 0
    usage: Usage = Usage()
    tool_calls: list[ToolCallSummary] = msgspec.field(default_factory=list)
    stage_ms: dict[str, float] = msgspec.field(default_factory=dict)
    degraded: bool = False

    def add_stage_time(self, stage: str, ms: float) -> None:
        self.stage_ms[stage] = self.stage_ms.get(stage, 0.0) + ms

    def add_usage(self, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        u = self.usage
        self.usage = Usage(
            prompt_tokens=u.prompt_tokens + prompt_tokens,
            completion_tokens=u.completion_tokens + completion_tokens,
            cost_usd=u.cost_usd + cost_usd,
        )
        self.llm_calls += 1


class _OfRequest(Contract, frozen=True, kw_only=True):
    """A record of one request: its ids."""

    request_id: str
    session_id: str
    user_id: str
    tenant_id: str


class _Turn(_OfRequest, frozen=True, kw_only=True):
    """One turn of a request between stages: the turn, what it may use, what it accumulated."""

    turn: Int32
    allowed_tools: list[str]
    metadata: dict[str, str]
    progress: RequestProgress
    deadline: datetime | None = None
    stream: bool = False
    """The request streams its answer to ``agent.stream`` (decided at validation)."""
    agent: str | None = None
    """The agent serving this request, resolved at validation (None: the default agent)."""


class AgentRequest(_OfRequest, frozen=True, kw_only=True):
    schema: ClassVar[str] = "AgentRequest"

    message: str
    allowed_tools: list[str] = msgspec.field(default_factory=list)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    created_at: datetime
    deadline: datetime | None = None
    previous_response_id: str | None = None
    """The response this request follows in its session; when the session no longer holds
    it (history lost) the request is answered ``CONTEXT_LOST`` instead of running without it."""
    stream: bool | None = None
    """Stream the answer to ``agent.stream``; None follows the ``streaming.default`` setting."""
    agent: str | None = None
    """The catalog agent that serves this request; None selects the default agent."""


class GenerationTurn(_Turn, frozen=True, kw_only=True):
    schema: ClassVar[str] = "GenerationTurn"

    tool_results: list[ToolResult] = msgspec.field(default_factory=list)
    message: str | None = None
    """Turn 0: the user's message (sanitized); the generation stage records it in the
    session's history with the turn's answer, in one write."""


class ToolCallBatch(_Turn, frozen=True, kw_only=True):
    schema: ClassVar[str] = "ToolCallBatch"

    calls: list[ToolCall]


class AgentResponse(_OfRequest, frozen=True, kw_only=True):
    schema: ClassVar[str] = "AgentResponse"

    response_id: str
    content: str
    tool_calls: list[ToolCallSummary]
    state: AgentState
    confidence: float
    execution_time_ms: Int64
    usage: Usage
    error_code: str | None = None
    metadata: dict[str, str]
    """Set by the pipeline (model, worker, degraded, cached, ...): not the request's."""
    created_at: datetime
    request_metadata: dict[str, str] = msgspec.field(default_factory=dict)
    """The request's metadata, echoed unchanged."""
    agent: str | None = None
    """The agent that produced this answer, and its version (hash of its definition)."""
    agent_version: str | None = None


class ErrorEvent(Contract, frozen=True, kw_only=True):
    schema: ClassVar[str] = "ErrorEvent"

    event_id: str
    request_id: str
    session_id: str | None = None
    tenant_id: str | None = None
    code: str
    message: str
    stage: str
    retriable: bool
    attempt: Int32
    time: datetime
    origin_topic: str | None = None
    origin_partition: Int32 | None = None
    origin_offset: Int64 | None = None
    # the failure behind ``code`` when ``code`` is a consequence (CIRCUIT_OPEN <- LLM_TIMEOUT)
    cause: str | None = None


class MetricsEvent(_OfRequest, frozen=True, kw_only=True):
    schema: ClassVar[str] = "MetricsEvent"

    outcome: str
    error_code: str | None = None
    total_latency_ms: float
    stage_latency_ms: dict[str, float]
    llm_calls: Int32
    turns: Int32
    prompt_tokens: Int64
    completion_tokens: Int64
    cost_usd: float
    tool_calls: Int32
    tool_errors: Int32
    time: datetime
    tool_details: list[ToolCallSummary] = msgspec.field(default_factory=list)
    model: str | None = None
    feedback_rating: Int32 | None = None
    """Outcome ``FEEDBACK``: the rating given (1 to 5)."""
    feedback_comment_chars: Int32 | None = None
    """Outcome ``FEEDBACK``: the comment's length (its text is never carried)."""
    agent: str | None = None
    agent_version: str | None = None


class StreamDelta(Contract, frozen=True, kw_only=True):
    """A piece of a model answer as it is written (``agent.stream``, keyed by session)."""

    schema: ClassVar[str] = "StreamDelta"

    request_id: str
    session_id: str
    tenant_id: str
    turn: Int32
    attempt: Int32
    sequence: Int32
    text: str
    final: bool
    time: datetime


class Feedback(_OfRequest, frozen=True, kw_only=True):
    """A user's rating of one response (``agent.feedback``, keyed by session)."""

    schema: ClassVar[str] = "Feedback"

    response_id: str
    rating: Int32
    comment: str | None = None
    agent: str | None = None
    model: str | None = None
    created_at: datetime


class CancelRequest(Contract, frozen=True, kw_only=True):
    """A request to stop an agent request (topic ``agent.control``, keyed by request id)."""

    schema: ClassVar[str] = "CancelRequest"

    cancel_id: str
    request_id: str
    tenant_id: str
    requested_by: str
    reason: str | None = None
    session_id: str | None = None
    created_at: datetime


class ApprovalRequest(_OfRequest, frozen=True, kw_only=True):
    """A tool call parked for a person's approval (``agent.approvals``). Its arguments are for
    approvers only: never logged."""

    schema: ClassVar[str] = "ApprovalRequest"

    approval_id: str
    turn: Int32
    call_id: str
    tool: str
    arguments_json: str
    requested_at: datetime
    expires_at: datetime
    agent: str | None = None


class ApprovalDecision(_OfRequest, frozen=True, kw_only=True):
    """A decision on a parked call (``agent.approval-decisions``): APPROVE, DENY or TIMEOUT."""

    schema: ClassVar[str] = "ApprovalDecision"

    approval_id: str
    decision: str
    approver_id: str
    reason: str | None = None
    decided_at: datetime


class ApprovalAudit(_OfRequest, frozen=True, kw_only=True):
    """One per decision received (``agent.approval-audit``), whether it counted or not."""

    schema: ClassVar[str] = "ApprovalAudit"

    event_id: str
    approval_id: str
    decision: str
    approver_id: str
    reason: str | None = None
    decided_at: datetime
    outcome: str
    effective_decision: str
    recorded_at: datetime


class DelegationResult(_OfRequest, frozen=True, kw_only=True):
    """A child request's final answer for its parent (``agent.delegation-results``): the ids
    are the parent's."""

    schema: ClassVar[str] = "DelegationResult"

    child_request_id: str
    response_id: str
    content: str
    is_error: bool
    error_code: str | None = None
    created_at: datetime


#: What a stage consumes: a request, one of its turns, a rating of its answer, a decision on a
#: parked call, or a child request's answer for the parent that delegated to it.
StageInput = (
    AgentRequest | GenerationTurn | ToolCallBatch | Feedback | ApprovalDecision | DelegationResult
)

#: Every top-level contract by its short name.
CONTRACTS: dict[str, type[Contract]] = {
    c.schema: c
    for c in (
        AgentRequest,
        GenerationTurn,
        ToolCallBatch,
        AgentResponse,
        ErrorEvent,
        MetricsEvent,
        StreamDelta,
        Feedback,
        CancelRequest,
        ApprovalRequest,
        ApprovalDecision,
        ApprovalAudit,
        DelegationResult,
    )
}
