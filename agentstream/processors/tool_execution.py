"""Tool-execution stage: agent.tool-calls -> agent.generation.

Runs a batch's calls concurrently (bounded by ``limits.tool_concurrency``), each with its own
timeout. A failing, denied or invalid call does not fail its siblings: its error becomes that
call's result, which goes back to the model.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, NoReturn

from agentstream.admission.cache import bypassed
from agentstream.agents import Agent
from agentstream.exceptions import ErrorCode
from agentstream.observability.logging import get_logger
from agentstream.processors.base import (
    Inbound,
    Outbound,
    RequestIds,
    StageDeps,
    StageResult,
    ms_since,
)
from agentstream.processors.cancellation import RequestCancelled
from agentstream.processors.outcomes import (
    CONTEXT_LOST_TEXT,
    FORBIDDEN_TEXT,
    Failure,
    finish,
    request_error_event,
    session_release,
)
from agentstream.processors.parking_gate import GateResult, ParkingGate
from agentstream.processors.progress import call_result, next_turn
from agentstream.processors.signals import DeadLetter
from agentstream.processors.stage import Stage
from agentstream.schemas.contracts import (
    AgentState,
    ToolCall,
    ToolCallBatch,
    ToolResult,
)
from agentstream.schemas.dead_letter import REPLAYED_FROM, UNKNOWN_CALLS
from agentstream.state.context import AgentContext
from agentstream.state.exceptions import ContextLostError, SessionForbiddenError
from agentstream.state.journal import tool_step_id
from agentstream.tools.base import CallContext, ToolOutcome


class ToolOutcomeUnknown(Exception):
    """A side-effecting call may or may not have happened."""


STAGE = "tools"
MAX_RESULT_CHARS = 16 * 1024
# Marks a call that an earlier delivery already dead-lettered as outcome unknown.
_ALREADY_DEAD_LETTERED = ToolOutcome(
    content="", is_error=True, error_code=ErrorCode.TOOL_OUTCOME_UNKNOWN
)
# The result of a call skipped (or a read-only call stopped) because its request was cancelled.
_NOT_RUN = ToolOutcome(
    content="Not run: the request was cancelled.", is_error=True, error_code=ErrorCode.CANCELLED
)
log = get_logger(__name__)


class ToolExecutionStage(Stage[ToolCallBatch]):
    stage = STAGE
    contract = ToolCallBatch

    def __init__(self, deps: StageDeps) -> None:
        super().__init__(deps)
        self._limit = asyncio.Semaphore(deps.settings.limits.tool_concurrency)
        self._gate = ParkingGate(deps)

    async def _run(
        self, msg: Inbound, batch: ToolCallBatch, ids: RequestIds, started: datetime
    ) -> StageResult:
        deps = self.deps
        failure = await self._mark_executing(ids)
        if failure is not None:
            return finish(
                deps,
                ids=ids,
                progress=batch.progress,
                content=failure.message,
                failure=failure,
                request_metadata=batch.metadata,
                origin=msg,
                agent=self._agent(batch),
            )
        gate = await self._gate.check(
            msg, batch, ids, runnable=lambda call: self._refusal(call, batch) is None
        )
        if gate.parked is not None:  # waits for approvers or child agents, in Redis: nothing runs
            return StageResult(records=gate.parked)
        maybe = await asyncio.gather(
            *(
                self._journaled_call(msg, call, index, batch, ids, gate)
                for index, call in enumerate(batch.calls)
            )
        )
        if any(o is _ALREADY_DEAD_LETTERED for o in maybe):
            # The request ended when the batch was dead-lettered. A redelivered copy of an
            # earlier step (e.g. its validation, re-claiming the session) may have led here:
            # free the session again, or the user's next request would wait behind a dead one.
            log.info("batch already dead-lettered as outcome unknown; dropping this delivery")
            return StageResult(then=session_release(deps, ids))
        unknown = [
            (index, call.name)
            for index, (call, o) in enumerate(zip(batch.calls, maybe, strict=True))
            if o is None
        ]
        if unknown:
            self._outcome_unknown(ids, batch.turn, unknown)
        outcomes = [o for o in maybe if o is not None]
        results = self._results(batch, outcomes)
        # cancelled meanwhile: the calls that ran are journaled; the request ends here
        deps.cancellations.check(ids.request_id)
        log.info("tool batch done", calls=len(results), errors=sum(r.is_error for r in results))
        batch.progress.add_stage_time(STAGE, ms_since(started))
        turn = next_turn(batch, results)
        topic = deps.settings.topics.generation
        out = [Outbound(topic=topic, key=ids.key, value=deps.codec.encode_record(turn))]
        for call, outcome in zip(batch.calls, outcomes, strict=True):
            if outcome.error_code == ErrorCode.TOOL_ACCESS_DENIED:
                denied = Failure(
                    code=ErrorCode.TOOL_ACCESS_DENIED,
                    stage=STAGE,
                    message=f"tool {call.name!r} is not allowed for this request",
                )
                out.append(request_error_event(deps, ids, denied, msg))
        return StageResult(records=out)

    def _agent(self, batch: ToolCallBatch) -> Agent | None:
        catalog = self.deps.catalog
        return catalog.get(batch.agent) if catalog.has(batch.agent) else None

    @staticmethod
    def _results(batch: ToolCallBatch, outcomes: list[ToolOutcome]) -> list[ToolResult]:
        """Each call's result for the model, and its summary added to the request's progress."""
        return [
            call_result(
                batch.progress,
                turn=batch.turn,
                call_id=call.call_id,
                name=call.name,
                content=outcome.content[:MAX_RESULT_CHARS],
                is_error=outcome.is_error,
                error_code=outcome.error_code,
                duration_ms=outcome.duration_ms,
            )
            for call, outcome in zip(batch.calls, outcomes, strict=True)
        ]

    async def _mark_executing(self, ids: RequestIds) -> Failure | None:
        """Set the session EXECUTING; the failure when it is gone or not the caller's."""
        try:
            ctx = await self.deps.sessions.update(ids, _executing)
        except SessionForbiddenError as exc:
            return Failure(code=exc.code, message=FORBIDDEN_TEXT, stage=STAGE)
        if ctx is None:
            return Failure(code=ContextLostError.code, message=CONTEXT_LOST_TEXT, stage=STAGE)
        return None

    async def _journaled_call(
        self,
        msg: Inbound,
        call: ToolCall,
        index: int,
        batch: ToolCallBatch,
        ids: RequestIds,
        gate: GateResult,
    ) -> ToolOutcome | None:
        """Run one call at most once (step journal). None means: outcome unknown."""
        sessions = self.deps.sessions
        step = tool_step_id(ids.request_id, batch.turn, index)
        replayed = msg.has_header(REPLAYED_FROM)
        state = await sessions.begin_step(ids, step, rerun_unknown=replayed)
        if state.status == "done" and state.result is not None:
            return ToolOutcome.from_json(state.result)
        if state.status == "unknown":
            return _ALREADY_DEAD_LETTERED
        # a call answered without running (denied, a child's answer) is safe to answer again
        known = gate.outcome(index)
        if state.status == "in_flight" and known is None and not self._safe_to_rerun(call.name):
            if not replayed:
                log.warning("tool call outcome unknown", tool=call.name, step=step)
                await sessions.mark_step_unknown(ids, step)
                return None
            log.info("replayed by an operator: running the unknown step again", step=step)
        outcome = known or await self._run_call(call, index, batch, ids)
        await sessions.complete_step(ids, step, outcome.to_json())
        return outcome

    def _safe_to_rerun(self, name: str) -> bool:
        """Read-only tools and tools that take an idempotency key may run again."""
        policy = self.deps.tools.policy(name)
        return policy.read_only or policy.accepts_idempotency_key

    def _outcome_unknown(
        self, ids: RequestIds, turn: int, calls: list[tuple[int, str]]
    ) -> NoReturn:
        """A side-effecting call was in flight when its worker died and cannot be repeated
        safely: the batch goes to the dead-letter topic for an operator (replaying it with
        ``--rerun-side-effects`` runs the call again; the header ``agentstream-unknown-calls``
        names the calls and their tools' policies) and the session is released so the user's
        next request is not stuck."""
        names = [name for _, name in calls]
        reason = (
            f"outcome unknown for side-effecting tool call(s) {', '.join(names)}: "
            "a previous attempt started and never finished; check the tool, then replay"
        )
        described = []
        for index, name in calls:
            policy = self.deps.tools.policy(name)
            described.append(
                {
                    "tool": name,
                    "step": tool_step_id(ids.request_id, turn, index),
                    "read_only": policy.read_only,
                    "accepts_idempotency_key": policy.accepts_idempotency_key,
                }
            )
        headers = {UNKNOWN_CALLS: json.dumps(described, separators=(",", ":"))}
        raise DeadLetter(
            ErrorCode.TOOL_OUTCOME_UNKNOWN, reason, headers=headers
        ) from ToolOutcomeUnknown(reason)

    async def _run_call(
        self, call: ToolCall, index: int, batch: ToolCallBatch, ids: RequestIds
    ) -> ToolOutcome:
        refused = self._refusal(call, batch)
        if refused is not None:
            return refused
        arguments = _arguments(call)
        if arguments is None:
            return ToolOutcome(
                content="Error: tool arguments are not a JSON object",
                is_error=True,
                error_code=ErrorCode.TOOL_INVALID_ARGUMENTS,
            )
        context = CallContext(
            tenant_id=ids.tenant_id,
            user_id=ids.user_id,
            request_id=ids.request_id,
            session_id=ids.session_id,
            request_allowed=tuple(batch.allowed_tools),
            idempotency_key=tool_step_id(ids.request_id, batch.turn, index),
            bypass_cache=bypassed(batch.metadata),
        )
        async with self._limit:
            return await self._execute(call.name, arguments, context)

    async def _execute(
        self, name: str, arguments: dict[str, Any], call: CallContext
    ) -> ToolOutcome:
        """Run the call, unless its request was cancelled before it started (it is skipped). A
        cancel stops a running read-only call; a side-effecting one always finishes."""
        cancels = self.deps.cancellations
        if cancels.notice(call.request_id) is not None:
            return _NOT_RUN
        timeout_s = self.deps.settings.timeouts.tool_call_s
        if not self.deps.tools.policy(name).read_only:
            return await self.deps.tools.execute(name, arguments, timeout_s=timeout_s, call=call)
        try:
            async with cancels.abortable(call.request_id):
                return await self.deps.tools.execute(
                    name, arguments, timeout_s=timeout_s, call=call
                )
        except RequestCancelled:
            return _NOT_RUN

    def _offers(self, batch: ToolCallBatch, name: str) -> bool:
        """Whether the batch's agent offers the tool (an agent gone from the catalog: none)."""
        catalog = self.deps.catalog
        return catalog.has(batch.agent) and catalog.get(batch.agent).offers(name)

    def _refusal(self, call: ToolCall, batch: ToolCallBatch) -> ToolOutcome | None:
        """Why this call must not run (degraded mode, not allowed for the request), as the
        call's error result; None = it may run."""
        if self.deps.settings.degradation.disable_tools:
            return ToolOutcome(
                content="Error: tools are disabled right now (degraded mode)",
                is_error=True,
                error_code=ErrorCode.TOOLS_DISABLED,
            )
        if (batch.allowed_tools and call.name not in batch.allowed_tools) or not self._offers(
            batch, call.name
        ):
            return ToolOutcome(
                content=f"Error: tool access denied: {call.name}",
                is_error=True,
                error_code=ErrorCode.TOOL_ACCESS_DENIED,
            )
        return None


def _arguments(call: ToolCall) -> dict[str, Any] | None:
    try:
        arguments = json.loads(call.arguments_json)
    except ValueError:
        return None
    return arguments if isinstance(arguments, dict) else None


def _executing(ctx: AgentContext | None) -> AgentContext | None:
    if ctx is None:
        return None
    ctx.state = AgentState.EXECUTING
    return ctx
