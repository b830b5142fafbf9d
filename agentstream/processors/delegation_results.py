"""Delegation results stage: agent.responses -> the parent's batch, resumed.

Reads every final response; those of child requests (their echoed metadata names the parent's
session, processors/delegation.py) resolve the parent call that waits for them: the child's
answer, or its failure as the call's error. When it was the last thing the parent's batch waited
for, the batch goes back to ``agent.tool-calls`` and, once the broker has it, its park is marked
resumed. A response read twice resolves nothing twice (the first resolution counts).
"""

from __future__ import annotations

import re
from datetime import datetime

from agentstream.observability.logging import get_logger
from agentstream.processors.approval_gate import park_of
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageResult
from agentstream.processors.delegation import PARENT_SESSION, child_result
from agentstream.processors.stage import Stage
from agentstream.schemas.contracts import AgentResponse
from agentstream.state.parking import ParkRef

STAGE = "delegation"
#: A child's session id is its request id, a step id (``...:t<turn>:c<index>``): responses of
#: other sessions are passed over without decoding.
_CHILD_KEY = re.compile(rb":t\d+:c\d+\Z")
log = get_logger(__name__)


class DelegationResultStage(Stage[AgentResponse]):
    stage = STAGE
    contract = AgentResponse

    @staticmethod
    def passes_over(msg: Inbound) -> bool:
        """Not a child's response (the runner skips it: no span, no decoding)."""
        return msg.key is None or _CHILD_KEY.search(msg.key) is None

    async def __call__(self, msg: Inbound) -> StageResult:
        if self.passes_over(msg):
            return StageResult()
        return await super().__call__(msg)

    async def _run(
        self, msg: Inbound, response: AgentResponse, ids: RequestIds, started: datetime
    ) -> StageResult:
        parent_session = response.request_metadata.get(PARENT_SESSION)
        parking = self.deps.parking
        if not parent_session or parking is None:
            return StageResult()  # not a child's answer
        ref = ParkRef(
            tenant_id=ids.tenant_id,
            session_id=parent_session,
            park_id=park_of(response.request_id),
            user_id=ids.user_id,
        )
        result = await parking.resolve(ref, response.request_id, child_result(response))
        log.info("child answer", first=result.first, resumes=result.resume is not None)
        record = result.resume
        if record is None:
            return StageResult()
        out = Outbound(
            topic=record.topic, key=record.key, value=record.value, headers=record.headers
        )

        async def confirm() -> None:
            await parking.resumed(ref)

        return StageResult(records=[out], then=confirm)
