"""Approvals stage: agent.approval-decisions -> agent.approval-audit (+ the resumed batch).

Each decision (APPROVE, DENY, or TIMEOUT from the pipeline's own sweep) is recorded for its
approval unless one was recorded before: the first decision counts, later ones change nothing
(idempotent). Every decision received gets one audit event saying whether it counted. When the
decision was the last one its parked batch waited for, the batch goes back to
``agent.tool-calls`` (header ``agentstream-resumed-from``) and, once the broker has it, the park
is marked resumed.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from agentstream.observability.logging import get_logger
from agentstream.processors.approval_gate import (
    DECISIONS,
    decision_of,
    park_of,
    resolution,
)
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageResult, utcnow
from agentstream.processors.stage import Stage
from agentstream.schemas.contracts import ApprovalAudit, ApprovalDecision
from agentstream.state.parking import ParkRef, Resolution

STAGE = "approvals"
APPLIED, DUPLICATE, INVALID = "APPLIED", "DUPLICATE", "INVALID"
log = get_logger(__name__)


class ApprovalStage(Stage[ApprovalDecision]):
    stage = STAGE
    contract = ApprovalDecision

    async def _run(
        self, msg: Inbound, decision: ApprovalDecision, ids: RequestIds, started: datetime
    ) -> StageResult:
        parking = self.deps.parking
        if parking is None or decision.decision not in DECISIONS:
            why = "no parking store" if parking is None else "unknown decision value"
            log.warning("approval decision not applied", reason=why)
            return StageResult(records=[self._audit(msg, decision, INVALID, "")])
        ref = ParkRef(
            tenant_id=ids.tenant_id,
            session_id=ids.session_id,
            park_id=park_of(decision.approval_id),
            user_id=ids.user_id,
        )
        stored = resolution(decision.decision, decision.approver_id, decision.reason)
        result = await parking.resolve(ref, decision.approval_id, stored)
        outcome = APPLIED if result.first else DUPLICATE
        log.info("approval decision", outcome=outcome, resumes=result.resume is not None)
        records = [self._audit(msg, decision, outcome, decision_of(result.effective))]
        if result.resume is None:
            return StageResult(records=records)
        records.append(_resumed(result))

        async def confirm() -> None:
            await parking.resumed(ref)

        return StageResult(records=records, then=confirm)

    def _audit(
        self, msg: Inbound, decision: ApprovalDecision, outcome: str, effective: str
    ) -> Outbound:
        audit = ApprovalAudit(
            # the same decision record redelivered gives the same event id
            event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"approval-audit:{msg.position}")),
            approval_id=decision.approval_id,
            request_id=decision.request_id,
            session_id=decision.session_id,
            user_id=decision.user_id,
            tenant_id=decision.tenant_id,
            decision=decision.decision,
            approver_id=decision.approver_id,
            reason=decision.reason,
            decided_at=decision.decided_at,
            outcome=outcome,
            effective_decision=effective,
            recorded_at=utcnow(),
        )
        return Outbound(
            topic=self.deps.settings.topics.approval_audit,
            key=decision.session_id.encode(),
            value=self.deps.codec.encode_record(audit),
        )


def _resumed(result: Resolution) -> Outbound:
    record = result.resume
    assert record is not None
    return Outbound(topic=record.topic, key=record.key, value=record.value, headers=record.headers)
