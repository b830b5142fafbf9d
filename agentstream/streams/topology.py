"""The pipeline's topology: every stage declared once.

A stage is its one name (used by ``agentstream worker --stages``, metrics labels, the
``agentstream-stage`` dead-letter header and logs), the topic it consumes (a field of
:class:`~agentstream.config.TopicSettings`), the contract on that topic, its handler, and how its
failures end (:mod:`agentstream.streams.policy`): whether transient failures go through the retry
tiers, and whether a dead-lettered record frees its session.

The worker, replay, ``tail``, topic creation and the docs read this table. Adding a stage is one
:class:`StageSpec` here, its handler module in ``processors/`` and its topic name in
``TopicSettings``.

    agent.requests --validation--> agent.generation --generation--> agent.tool-calls
                                        ^                                  |
                                        +-------------tools----------------+
    generation --> agent.responses (+ agent.metrics, agent.errors on failure)
    generation --> agent.stream (StreamDelta: answers as they are written, when requested)
    agent.feedback --feedback--> agent.metrics (a FEEDBACK MetricsEvent) + Prometheus
    tools --gated calls--> agent.approvals (the batch parks in Redis)
    agent.approval-decisions --approvals--> agent.approval-audit (+ the batch, resumed,
                                             back to agent.tool-calls)
    tools --agent.<name> calls--> agent.requests (child requests; the batch parks in Redis)
    a child's final answer --> agent.delegation-results --delegation--> its parent's batch,
                                                                     resumed
    every stage --transient--> <topic>.retry.<N>s --retry--> back to <topic>
    every stage --poison--> <topic>.dlq
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentstream.config import Settings
from agentstream.schemas.contracts import (
    CONTRACTS,
    AgentRequest,
    ApprovalDecision,
    Contract,
    DelegationResult,
    Feedback,
    GenerationTurn,
    StageInput,
    ToolCallBatch,
)

if TYPE_CHECKING:
    from agentstream.processors.base import Handler, StageDeps

    HandlerClass = Callable[[StageDeps], Handler]

#: The retry forwarder's name: it consumes the retry topics of the stages that have tiers.
RETRY = "retry"


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    name: str
    topic_field: str
    """The :class:`TopicSettings` field naming the topic this stage consumes."""
    contract: type[StageInput]
    load_handler: Callable[[], HandlerClass]
    """Imports and returns the handler class (lazily: topic tools need no model clients)."""
    retry_tiers: bool
    """Transient failures go through ``<topic>.retry.<N>s`` (else straight to the DLQ)."""
    releases_session: bool
    """A dead-lettered record frees its session (the stage runs with the session claimed)."""

    def topic(self, settings: Settings) -> str:
        name: str = getattr(settings.topics, self.topic_field)
        return name

    def dlq(self, settings: Settings) -> str:
        return settings.topics.dlq(self.topic(settings))


def _validation() -> HandlerClass:
    from agentstream.processors.validation import ValidationStage

    return ValidationStage


def _generation() -> HandlerClass:
    from agentstream.processors.generation import GenerationStage

    return GenerationStage


def _tools() -> HandlerClass:
    from agentstream.processors.tool_execution import ToolExecutionStage

    return ToolExecutionStage


def _feedback() -> HandlerClass:
    from agentstream.processors.feedback import FeedbackStage

    return FeedbackStage


def _delegation() -> HandlerClass:
    from agentstream.processors.delegation_results import DelegationResultStage

    return DelegationResultStage


def _approvals() -> HandlerClass:
    from agentstream.processors.approvals import ApprovalStage

    return ApprovalStage


STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="validation",
        topic_field="requests",
        contract=AgentRequest,
        load_handler=_validation,
        retry_tiers=True,
        releases_session=False,
    ),
    StageSpec(
        name="generation",
        topic_field="generation",
        contract=GenerationTurn,
        load_handler=_generation,
        retry_tiers=True,
        releases_session=True,
    ),
    StageSpec(
        name="tools",
        topic_field="tool_calls",
        contract=ToolCallBatch,
        load_handler=_tools,
        retry_tiers=True,
        releases_session=True,
    ),
    StageSpec(
        name="feedback",
        topic_field="feedback",
        contract=Feedback,
        load_handler=_feedback,
        retry_tiers=False,
        releases_session=False,
    ),
    StageSpec(
        name="approvals",
        topic_field="approval_decisions",
        contract=ApprovalDecision,
        load_handler=_approvals,
        retry_tiers=True,
        releases_session=False,
    ),
    StageSpec(
        name="delegation",
        topic_field="delegation_results",
        contract=DelegationResult,
        load_handler=_delegation,
        retry_tiers=True,  # a Redis outage takes the tiers, never the DLQ (as every stage)
        releases_session=False,
    ),
)
#: Everything a worker can run: the stages and the retry forwarder.
WORKER_STAGES: tuple[str, ...] = (*(s.name for s in STAGES), RETRY)
_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> StageSpec:
    return _BY_NAME[name]


def retry_topics(settings: Settings) -> list[str]:
    """Every retry-tier topic, of every stage that has tiers."""
    t = settings.topics
    return [
        t.retry_topic(s.topic(settings), tier)
        for s in STAGES
        if s.retry_tiers
        for tier in range(len(t.retry_tiers_s))
    ]


def consumed_topics(settings: Settings, name: str) -> list[str]:
    """The topics a worker stage consumes: its stage topic, or every retry tier for ``retry``."""
    if name == RETRY:
        return retry_topics(settings)
    return [stage(name).topic(settings)]


def pipeline_topics(settings: Settings) -> list[str]:
    """Every topic the pipeline uses, dead-letter and retry topics included."""
    t = settings.topics
    stage_topics = [s.topic(settings) for s in STAGES]
    return [
        *stage_topics,
        t.responses,
        t.errors,
        t.metrics,
        t.stream,
        t.control,
        t.approvals,
        t.approval_audit,
        *(t.dlq(name) for name in stage_topics),
        *retry_topics(settings),
    ]


def contract_for_topic(settings: Settings, topic: str) -> type[Contract] | None:
    """The contract carried by ``topic`` (or by the topic a DLQ or retry topic belongs to)."""
    t = settings.topics
    outputs: dict[str, type[Contract]] = {
        t.responses: CONTRACTS["AgentResponse"],
        t.errors: CONTRACTS["ErrorEvent"],
        t.metrics: CONTRACTS["MetricsEvent"],
        t.stream: CONTRACTS["StreamDelta"],
        t.control: CONTRACTS["CancelRequest"],
        t.approvals: CONTRACTS["ApprovalRequest"],
        t.approval_audit: CONTRACTS["ApprovalAudit"],
    }
    for s in STAGES:
        name = s.topic(settings)
        outputs[name] = s.contract
        outputs[t.dlq(name)] = s.contract
        if s.retry_tiers:
            for tier in range(len(t.retry_tiers_s)):
                outputs[t.retry_topic(name, tier)] = s.contract
    return outputs.get(topic)
