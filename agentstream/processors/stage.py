"""The shape every stage handler shares: decode the stage's contract (bytes that are not this
contract go to the dead-letter topic), bind the request's correlation ids, run the stage."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from agentstream.observability.logging import bind_request
from agentstream.processors.base import Inbound, RequestIds, StageDeps, StageResult, utcnow
from agentstream.processors.signals import DeadLetter
from agentstream.schemas.exceptions import SerializationError


class Stage:
    stage: ClassVar[str]
    schema: ClassVar[str]

    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps

    async def __call__(self, msg: Inbound) -> StageResult:
        started = utcnow()
        try:
            event = await self.deps.codec.decode_async(self.schema, msg.value)
        except SerializationError as exc:
            raise DeadLetter("UNDECODABLE", f"cannot decode {self.schema}: {exc}") from exc
        ids = RequestIds.of(event)
        with bind_request(request_id=ids.request_id, session_id=ids.session_id, stage=self.stage):
            return await self._run(msg, event, ids, started)

    async def _run(
        self, msg: Inbound, event: dict[str, Any], ids: RequestIds, started: datetime
    ) -> StageResult:
        raise NotImplementedError
