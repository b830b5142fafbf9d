"""What ``agentstream approvals list|approve|deny`` does, from the topics alone.

Pending approvals are the :class:`ApprovalRequest` records on ``agent.approvals`` (one per
approval id; a redelivered batch may have published one twice) that no audit event on
``agent.approval-audit`` has decided and that have not expired. A decision names the approval's
request, session, user and tenant: they are taken from its ApprovalRequest, so an approver needs
only the approval id. Nothing here reads Redis: whether a decision counts is the pipeline's to
say (the first one does), and the audit event tells.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError, ErrorCode
from agentstream.processors.approval_gate import APPROVE, DENY
from agentstream.processors.base import Outbound
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import (
    ApprovalAudit,
    ApprovalDecision,
    ApprovalRequest,
    Contract,
)
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.publisher import Publisher
from agentstream.streams.replay import DlqReader

C = TypeVar("C", bound=Contract)


class ApprovalNotFoundError(AgentStreamError):
    code = ErrorCode.INVALID_REQUEST


@dataclass(frozen=True, kw_only=True)
class ApprovalView:
    request: ApprovalRequest
    decision: str | None
    """The decision that counts (from the audit), None while pending."""

    @property
    def expired(self) -> bool:
        return self.request.expires_at <= datetime.now(UTC)


async def _read(settings: Settings, codec: AvroCodec, topic: str, contract: type[C]) -> list[C]:
    found: list[C] = []
    async with DlqReader(settings, topic) as reader:
        async for record in reader.records():
            try:
                found.append(await codec.decode_record_async(contract, record.value))
            except SerializationError:
                continue  # not ours to judge here: the topic's other readers report it
    return found


async def approvals(settings: Settings, codec: AvroCodec) -> list[ApprovalView]:
    """Every approval on the topic (once each), with its decision from the audit."""
    t = settings.topics
    requests = await _read(settings, codec, t.approvals, ApprovalRequest)
    audits = await _read(settings, codec, t.approval_audit, ApprovalAudit)
    decided = {a.approval_id: a.effective_decision for a in audits if a.effective_decision}
    latest: dict[str, ApprovalRequest] = {}
    for request in requests:
        latest[request.approval_id] = request
    return [ApprovalView(request=r, decision=decided.get(i)) for i, r in latest.items()]


async def pending(settings: Settings, codec: AvroCodec) -> list[ApprovalView]:
    """Approvals nobody has decided yet and that have not expired."""
    return [v for v in await approvals(settings, codec) if v.decision is None and not v.expired]


async def decide(
    settings: Settings,
    codec: AvroCodec,
    approval_id: str,
    *,
    approve: bool,
    approver_id: str,
    reason: str | None = None,
) -> ApprovalDecision:
    """Publish a decision on ``approval_id``; ApprovalNotFoundError if no such approval."""
    views = {v.request.approval_id: v for v in await approvals(settings, codec)}
    view = views.get(approval_id)
    if view is None:
        raise ApprovalNotFoundError(f"no approval {approval_id!r} on {settings.topics.approvals}")
    r = view.request
    decision = ApprovalDecision(
        approval_id=approval_id,
        request_id=r.request_id,
        session_id=r.session_id,
        user_id=r.user_id,
        tenant_id=r.tenant_id,
        decision=APPROVE if approve else DENY,
        approver_id=approver_id,
        reason=reason,
        decided_at=datetime.now(UTC),
    )
    publisher = Publisher(settings)
    await publisher.start()
    try:
        await publisher.publish(
            [
                Outbound(
                    topic=settings.topics.approval_decisions,
                    key=r.session_id.encode(),
                    value=codec.encode_record(decision),
                )
            ]
        )
    finally:
        await publisher.stop()
    return decision
