"""The shape every stage handler shares: decode the stage's contract (bytes that are not this
contract go to the dead-letter topic), bind the request's correlation ids, run the stage.

A cancelled request (processors/cancellation.py) ends at the stage boundary, before the stage
runs, or when the stage's running work is stopped (``RequestCancelled``): with the CANCELLED
response (processors/cancelled.py)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Generic, TypeVar

from agentstream.exceptions import ErrorCode
from agentstream.observability.logging import bind_request, get_logger
from agentstream.processors.base import (
    Handed,
    Inbound,
    RequestIds,
    StageDeps,
    StageResult,
    utcnow,
)
from agentstream.processors.cancellation import CancelNotice, RequestCancelled
from agentstream.processors.cancelled import cancelled_outcome
from agentstream.processors.progress import new_progress
from agentstream.processors.signals import DeadLetter
from agentstream.schemas.contracts import AgentRequest, GenerationTurn, StageInput, ToolCallBatch
from agentstream.schemas.exceptions import SerializationError

E = TypeVar("E", bound=StageInput)
log = get_logger(__name__)


class Stage(Generic[E]):
    """A stage handler: ``contract`` is what it consumes, ``stage`` its one name."""

    stage: ClassVar[str]
    contract: type[E]
    cancellable: ClassVar[bool] = True
    """Whether a cancel of the event's request ends it here (False: events about a request
    that are not its work, e.g. feedback on its answer)."""

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps

    async def __call__(self, msg: Inbound) -> StageResult:
        started = utcnow()
        event = await self.decode(msg)
        ids = RequestIds.of(event)
        with bind_request(request_id=ids.request_id, session_id=ids.session_id, stage=self.stage):
            if not self.cancellable:
                return await self._run(msg, event, ids, started)
            try:
                self.deps.cancellations.check(ids.request_id)
                return await self._run(msg, event, ids, started)
            except RequestCancelled as cancelled:
                log.info("request cancelled", cancel_id=cancelled.notice.cancel_id)
                return self._cancelled(event, ids, cancelled.notice, started)

    def _cancelled(
        self, event: E, ids: RequestIds, notice: CancelNotice, started: datetime
    ) -> StageResult:
        held = True
        if isinstance(event, AgentRequest):  # not taken yet: its progress starts here
            progress = new_progress(started, len(event.message.encode()))
            metadata, held = event.metadata, False  # nor its session claimed
        elif isinstance(event, GenerationTurn | ToolCallBatch):
            progress, metadata = event.progress, event.metadata
        else:  # pragma: no cover - stages of other contracts are not cancellable
            raise TypeError(f"{type(event).__name__} is not a request's work")
        return cancelled_outcome(
            self.deps,
            ids=ids,
            progress=progress,
            notice=notice,
            request_metadata=metadata,
            held=held,
        )

    async def decode(self, msg: Inbound) -> E:
        """The record's contract; a record that is not one is dead-lettered as UNDECODABLE.
        A record handed over in this worker comes with its contract, decoded once already."""
        handed = msg.carried.take_event() if isinstance(msg.carried, Handed) else None
        if isinstance(handed, self.contract):
            return handed
        try:
            return await self.deps.codec.decode_record_async(self.contract, msg.value)
        except SerializationError as exc:
            name = self.contract.schema
            raise DeadLetter(ErrorCode.UNDECODABLE, f"cannot decode {name}: {exc}") from exc

    async def _run(self, msg: Inbound, event: E, ids: RequestIds, started: datetime) -> StageResult:
        raise NotImplementedError
