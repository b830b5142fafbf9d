"""The shape every stage handler shares: decode the stage's contract (bytes that are not this
contract go to the dead-letter topic), bind the request's correlation ids, run the stage."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Generic, TypeVar

from agentstream.exceptions import ErrorCode
from agentstream.observability.logging import bind_request
from agentstream.processors.base import Inbound, RequestIds, StageDeps, StageResult, utcnow
from agentstream.processors.signals import DeadLetter
from agentstream.schemas.contracts import StageInput
from agentstream.schemas.exceptions import SerializationError

E = TypeVar("E", bound=StageInput)


class Stage(Generic[E]):
    """A stage handler: ``contract`` is what it consumes, ``stage`` its one name."""

    stage: ClassVar[str]
    contract: type[E]

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps

    async def __call__(self, msg: Inbound) -> StageResult:
        started = utcnow()
        event = await self.decode(msg)
        ids = RequestIds.of(event)
        with bind_request(request_id=ids.request_id, session_id=ids.session_id, stage=self.stage):
            return await self._run(msg, event, ids, started)

    async def decode(self, msg: Inbound) -> E:
        """The record's contract; a record that is not one is dead-lettered as UNDECODABLE."""
        try:
            return await self.deps.codec.decode_record_async(self.contract, msg.value)
        except SerializationError as exc:
            name = self.contract.schema
            raise DeadLetter(ErrorCode.UNDECODABLE, f"cannot decode {name}: {exc}") from exc

    async def _run(self, msg: Inbound, event: E, ids: RequestIds, started: datetime) -> StageResult:
        raise NotImplementedError
