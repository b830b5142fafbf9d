"""The tool stage's gate: calls that wait for something outside the worker park their batch.

Two kinds of calls wait: calls that need a person's approval (processors/approval_gate.py) and
calls of another agent (processors/delegation.py). Each waits under its step id
(``<request>:t<turn>:c<index>``): an approval id, or the child request's id. Before any call of
a batch runs, their stored resolutions are looked up. When every one is resolved the batch runs:
approved calls as usual, denied ones and delegations with their stored result. Otherwise the
batch is parked in Redis (state/parking.py; one park per batch, ``<request>:t<turn>``), an
:class:`ApprovalRequest` goes out per open approval and a child :class:`AgentRequest` per open
delegation, and the batch's offset is acknowledged. A redelivered batch that is still parked
sends them again (same ids: approvers see one approval; the child request is deduplicated).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agentstream.exceptions import ErrorCode
from agentstream.observability.logging import get_logger
from agentstream.processors.approval_gate import (
    DENY,
    agent_of,
    approval_request,
    denial,
    gated,
    park_id,
    parked_record,
    resolution,
)
from agentstream.processors.base import Inbound, Outbound, RequestIds, StageDeps
from agentstream.processors.delegation import (
    AgentDirectory,
    child_request,
    is_delegation,
    lineage,
    refusal,
    result_outcome,
)
from agentstream.schemas.contracts import ToolCall, ToolCallBatch
from agentstream.state.journal import tool_step_id
from agentstream.state.parking import ParkRef
from agentstream.tools.base import ToolOutcome

log = get_logger(__name__)


@dataclass(kw_only=True)
class GateResult:
    """Either the batch is parked (``parked``: the records to publish), or what each waiting
    call resolved to, by call index (other calls are absent: they just run)."""

    parked: list[Outbound] | None = None
    stored: dict[int, str] = field(default_factory=dict)
    refused: dict[int, ToolOutcome] = field(default_factory=dict)
    delegated: frozenset[int] = frozenset()
    approval_timeout_s: float = 0.0
    delegation_timeout_s: float = 0.0

    def outcome(self, index: int) -> ToolOutcome | None:
        """Call ``index``'s result without running it; None when it is to run."""
        if index in self.refused:
            return self.refused[index]
        stored = self.stored.get(index)
        if stored is None:
            return None
        data = json.loads(stored)
        if "content" in data:  # a child's answer
            return result_outcome(data)
        if index in self.delegated:  # the sweep's TIMEOUT: the child did not answer in time
            return ToolOutcome(
                content=f"Error: the agent did not answer within {self.delegation_timeout_s:g} s",
                is_error=True,
                error_code=ErrorCode.TOOL_TIMEOUT,
            )
        return denial(stored, self.approval_timeout_s)


@dataclass(kw_only=True)
class _Plan:
    approvals: list[int]
    delegations: list[int]
    refused: dict[int, ToolOutcome]
    chain: list[str]

    @property
    def waiting(self) -> list[int]:
        return sorted([*self.approvals, *self.delegations])


class ParkingGate:
    def __init__(self, deps: StageDeps, directory: AgentDirectory | None = None) -> None:
        self.deps = deps
        self.directory: AgentDirectory = directory or deps.catalog

    def _plan(self, batch: ToolCallBatch, runnable: Callable[[ToolCall], bool]) -> _Plan:
        chain = lineage(batch, agent_of(batch))
        delegations, refused = [], {}
        for i, call in enumerate(batch.calls):
            if not is_delegation(call) or not runnable(call):
                continue
            problem = refusal(call, chain, self.directory)
            if problem is None:
                delegations.append(i)
            else:
                refused[i] = problem
        approvals = [
            i
            for i in gated(self.deps.settings.tools.approvals, batch, runnable)
            if not is_delegation(batch.calls[i])
        ]
        return _Plan(approvals=approvals, delegations=delegations, refused=refused, chain=chain)

    async def check(
        self,
        msg: Inbound,
        batch: ToolCallBatch,
        ids: RequestIds,
        *,
        runnable: Callable[[ToolCall], bool],
    ) -> GateResult:
        plan = self._plan(batch, runnable)
        t = self.deps.settings.tools
        result = GateResult(
            refused=plan.refused,
            delegated=frozenset(plan.delegations),
            approval_timeout_s=t.approval_timeout_s,
            delegation_timeout_s=t.delegation_timeout_s,
        )
        if not plan.waiting:
            return result
        parking = self.deps.parking
        if parking is None:  # no Redis parking (the in-memory test pipeline)
            for i in plan.approvals:
                result.stored[i] = resolution(DENY, "agentstream", "approvals are unavailable")
            for i in plan.delegations:
                result.refused[i] = ToolOutcome(
                    content="Error: delegation is unavailable here",
                    is_error=True,
                    error_code=ErrorCode.TOOL_UNAVAILABLE,
                )
            return result
        wait_ids = {i: tool_step_id(ids.request_id, batch.turn, i) for i in plan.waiting}
        found = await parking.resolutions(ids.tenant_id, ids.session_id, list(wait_ids.values()))
        if all(found.values()):
            result.stored = {i: found[w] or "" for i, w in wait_ids.items()}
            return result
        now_ms = int(time.time() * 1000)
        ref = ParkRef(
            tenant_id=ids.tenant_id,
            session_id=ids.session_id,
            park_id=park_id(ids.request_id, batch.turn),
            user_id=ids.user_id,
        )
        parked = await parking.park(
            ref,
            request_id=ids.request_id,
            wait_ids=list(wait_ids.values()),
            record=parked_record(msg, ref.park_id),
            due_ms=self._due_ms(batch, plan, now_ms),
            now_ms=now_ms,
        )
        if parked.status == "decided":  # resolved between the lookup and the park
            return await self.check(msg, batch, ids, runnable=runnable)
        open_calls = {i for i, w in wait_ids.items() if not found[w]}
        log.info("tool batch parked", waits=len(open_calls), status=parked.status)
        result.parked = self._announce(batch, ids, plan, open_calls, parked.due_ms)
        return result

    def _due_ms(self, batch: ToolCallBatch, plan: _Plan, now_ms: int) -> int:
        t = self.deps.settings.tools
        waits_s = [t.approval_timeout_s] if plan.approvals else []
        waits_s += [t.delegation_timeout_s] if plan.delegations else []
        due = now_ms + int(max(waits_s) * 1000)
        if batch.deadline is not None:  # an answer after the deadline is not wanted
            due = min(due, int(batch.deadline.timestamp() * 1000))
        return max(due, now_ms)

    def _announce(
        self, batch: ToolCallBatch, ids: RequestIds, plan: _Plan, open_calls: set[int], due: int
    ) -> list[Outbound]:
        """The approval requests and child requests of the open waits."""
        topics = self.deps.settings.topics
        encode = self.deps.codec.encode_record
        records = [
            Outbound(
                topic=topics.approvals,
                key=ids.key,
                value=encode(approval_request(batch, ids, i, due)),
            )
            for i in plan.approvals
            if i in open_calls
        ]
        for i in plan.delegations:
            if i in open_calls:
                child = child_request(batch, ids, i, plan.chain)
                key = child.session_id.encode()
                records.append(Outbound(topic=topics.requests, key=key, value=encode(child)))
        return records
