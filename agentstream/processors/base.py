"""What a stage handler receives and returns, and the dependencies it is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentstream.agents import AgentCatalog
from agentstream.config import Settings
from agentstream.llm.base import LLMClient
from agentstream.observability.load import LoadMonitor
from agentstream.processors.cancellation import Cancellations
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import AgentResponse
from agentstream.schemas.records import Headers, Inbound, Outbound
from agentstream.state.context import AgentContext
from agentstream.state.journal import StepState
from agentstream.state.parking import ParkingLot
from agentstream.state.session import RequestIds, SessionStore
from agentstream.tools.base import ToolExecutor

if TYPE_CHECKING:
    from agentstream.admission import Admission
    from agentstream.processors.streaming import StreamOutput

__all__ = [
    "Handed",
    "Handler",
    "Headers",
    "Inbound",
    "Outbound",
    "RequestIds",
    "StageDeps",
    "StageResult",
    "ms_since",
    "utcnow",
]


@dataclass(kw_only=True)
class StageResult:
    """A handler's outputs, and an optional step to run once they are acknowledged by the broker
    (for example releasing the session for its next request). ``finished`` is the request's
    final response when this event ended the request (the runner counts it once published)."""

    records: list[Outbound] = field(default_factory=list)
    then: Callable[[], Awaitable[None]] | None = None
    finished: AgentResponse | None = None


Handler = Callable[[Inbound], Awaitable[StageResult]]


@dataclass(kw_only=True)
class Handed:
    """What validation gives the generation stage of its own worker with a request's first turn
    (local hand-over, ``Outbound.carried``): the decoded turn, and the first model step's journal
    state and the session's context when it read them with its claim. Each is taken once: a
    retry of the turn decodes its record and reads Redis again."""

    event: object
    step_id: str | None = None
    step_state: StepState | None = None
    context: AgentContext | None = None

    def take_event(self) -> object | None:
        event, self.event = self.event, None
        return event

    def take_reads(self, step_id: str) -> tuple[StepState, AgentContext | None] | None:
        state, self.step_state = self.step_state, None
        if state is None or step_id != self.step_id:
            return None
        return state, self.context


@dataclass(kw_only=True)
class StageDeps:
    settings: Settings
    codec: AvroCodec
    llm: LLMClient
    tools: ToolExecutor
    sessions: SessionStore
    admission: Admission | None = None  # rate limits, budgets, response cache
    load: LoadMonitor | None = None  # load shedding (RESOURCE_EXHAUSTED)
    stream: StreamOutput | None = None  # token streaming to agent.stream (None: never streams)
    agents: AgentCatalog | None = None  # None: only the built-in default agent

    @property
    def catalog(self) -> AgentCatalog:
        """The agents this worker serves (built from the settings when none was given)."""
        if self.agents is None:
            self.agents = AgentCatalog.of_settings(self.settings)
        return self.agents

    # the requests cancelled, and their work that can stop (processors/cancellation.py)
    cancellations: Cancellations = field(default_factory=Cancellations)
    parking: ParkingLot | None = None  # parked tool batches (human approval)
    # validation hands a request's first turn to this worker's generation stage (local
    # hand-over), so it reads what that turn needs with its claim (``Handed``)
    first_turn_here: bool = False


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_since(start: datetime) -> float:
    return (utcnow() - start).total_seconds() * 1000.0
