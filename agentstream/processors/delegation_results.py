"""Delegation results stage: agent.delegation-results -> the parent's batch, resumed.

A child request's final response (any ending: an answer, a refusal, an error) is followed by a
:class:`DelegationResult` for its parent (processors/outcomes.py publishes it with the
response; only child requests have one, so ordinary requests cost nothing here). It resolves the
parent call that waits for it: the child's answer, or its failure as the call's error. When it
was the last thing the parent's batch waited for, the batch goes back to ``agent.tool-calls``
and, once the broker has it, its park is marked resumed. A result read twice resolves nothing
twice (the first resolution counts).
"""

from __future__ import annotations

from datetime import datetime

from agentstream.observability.logging import get_logger
from agentstream.processors.approval_gate import park_of
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageResult
from agentstream.processors.delegation import stored_result
from agentstream.processors.stage import Stage
from agentstream.schemas.contracts import DelegationResult
from agentstream.state.parking import ParkRef

STAGE = "delegation"
log = get_logger(__name__)


class DelegationResultStage(Stage[DelegationResult]):
    stage = STAGE
    contract = DelegationResult

    async def _run(
        self, msg: Inbound, result: DelegationResult, ids: RequestIds, started: datetime
    ) -> StageResult:
        parking = self.deps.parking
        if parking is None:
            return StageResult()
        ref = ParkRef(
            tenant_id=ids.tenant_id,
            session_id=ids.session_id,
            park_id=park_of(result.child_request_id),
            user_id=ids.user_id,
        )
        resolved = await parking.resolve(ref, result.child_request_id, stored_result(result))
        log.info("child answer", first=resolved.first, resumes=resolved.resume is not None)
        record = resolved.resume
        if record is None:
            return StageResult()
        out = Outbound(
            topic=record.topic, key=record.key, value=record.value, headers=record.headers
        )

        async def confirm() -> None:
            await parking.resumed(ref)

        return StageResult(records=[out], then=confirm)
