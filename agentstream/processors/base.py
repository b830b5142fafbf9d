"""What a stage handler receives and returns, and the dependencies it is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentstream.config import Settings
from agentstream.llm.base import LLMClient
from agentstream.observability.load import LoadMonitor
from agentstream.schemas.codec import AvroCodec
from agentstream.state.context import ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal
from agentstream.tools.base import ToolExecutor

if TYPE_CHECKING:
    from agentstream.admission import Admission

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, kw_only=True)
class Inbound:
    """One consumed record."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True, kw_only=True)
class Outbound:
    """One record to produce. The runner sends all of a handler's outputs before acking."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)


@dataclass(kw_only=True)
class StageResult:
    """A handler's outputs, and an optional step to run once they are acknowledged by the broker
    (for example releasing the session for its next request)."""

    records: list[Outbound] = field(default_factory=list)
    then: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[Inbound], Awaitable[StageResult]]


@dataclass(frozen=True, kw_only=True)
class RequestIds:
    request_id: str
    session_id: str
    user_id: str
    tenant_id: str

    @classmethod
    def of(cls, event: dict[str, Any]) -> RequestIds:
        return cls(
            request_id=event["request_id"],
            session_id=event["session_id"],
            user_id=event["user_id"],
            tenant_id=event["tenant_id"],
        )

    @property
    def owner(self) -> tuple[str, str]:
        """Who a session belongs to: (tenant_id, user_id)."""
        return (self.tenant_id, self.user_id)

    def as_fields(self) -> dict[str, str]:
        return {
            "request_id": self.request_id,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "tenant_id": self.tenant_id,
        }


@dataclass(kw_only=True)
class StageDeps:
    settings: Settings
    codec: AvroCodec
    llm: LLMClient
    tools: ToolExecutor
    contexts: ContextStore
    dedupe: RequestDedupe
    journal: StepJournal
    admission: Admission | None = None  # rate limits, budgets, response cache
    load: LoadMonitor | None = None  # load shedding (RESOURCE_EXHAUSTED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def ms_since(start: datetime) -> float:
    return (utcnow() - start).total_seconds() * 1000.0
