"""Tool-execution stage: agent.tool-calls -> agent.generation.

Runs a batch's calls concurrently (bounded by ``limits.tool_concurrency``), each with its own
timeout. A failing, denied or invalid call does not fail its siblings: its error becomes that
call's result, which goes back to the model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentstream.observability.logging import get_logger
from agentstream.processors.base import (
    Inbound,
    Outbound,
    RequestIds,
    StageDeps,
    StageResult,
    ms_since,
)
from agentstream.processors.outcomes import CONTEXT_LOST_TEXT, Failure, error_event, finish
from agentstream.processors.progress import add_stage_time
from agentstream.processors.stage import Stage
from agentstream.schemas.dead_letter import REPLAYED_FROM, dead_letter
from agentstream.state.context import AgentContext
from agentstream.state.exceptions import ContextLostError, SessionForbiddenError
from agentstream.state.journal import tool_step_id
from agentstream.tools.base import CallContext, ToolOutcome


class ToolOutcomeUnknown(Exception):
    """A side-effecting call may or may not have happened."""


STAGE = "tools"
MAX_RESULT_CHARS = 16 * 1024
# Marks a call that an earlier delivery already dead-lettered as outcome unknown.
_ALREADY_DEAD_LETTERED = ToolOutcome(content="", is_error=True, error_code="TOOL_OUTCOME_UNKNOWN")
log = get_logger(__name__)


class ToolExecutionStage(Stage):
    stage = STAGE
    schema = "ToolCallBatch"

    def __init__(self, deps: StageDeps) -> None:
        super().__init__(deps)
        self._limit = asyncio.Semaphore(deps.settings.limits.tool_concurrency)

    async def _run(
        self, msg: Inbound, batch: dict[str, Any], ids: RequestIds, started: Any
    ) -> StageResult:
        deps = self.deps
        progress: dict[str, Any] = batch["progress"]
        failure = await self._mark_executing(ids)
        if failure is not None:
            return StageResult(
                records=finish(
                    deps,
                    ids=ids,
                    progress=progress,
                    content=failure.message,
                    failure=failure,
                    origin=msg,
                )
            )
        allowed: list[str] = batch["allowed_tools"]
        maybe = await asyncio.gather(
            *(
                self._journaled_call(msg, call, index, batch, ids)
                for index, call in enumerate(batch["calls"])
            )
        )
        if any(o is _ALREADY_DEAD_LETTERED for o in maybe):
            log.info("batch already dead-lettered as outcome unknown; dropping this delivery")
            return StageResult()
        unknown = [c["name"] for c, o in zip(batch["calls"], maybe, strict=True) if o is None]
        if unknown:
            return self._outcome_unknown(msg, ids, unknown)
        outcomes = [o for o in maybe if o is not None]
        out: list[Outbound] = []
        results = []
        for call, outcome in zip(batch["calls"], outcomes, strict=True):
            results.append(
                {
                    "call_id": call["call_id"],
                    "name": call["name"],
                    "content": outcome.content[:MAX_RESULT_CHARS],
                    "is_error": outcome.is_error,
                    "error_code": outcome.error_code,
                    "duration_ms": outcome.duration_ms,
                }
            )
            progress["tool_calls"].append(
                {
                    "call_id": call["call_id"],
                    "name": call["name"],
                    "turn": batch["turn"],
                    "is_error": outcome.is_error,
                    "error_code": outcome.error_code,
                    "duration_ms": outcome.duration_ms,
                }
            )
            if outcome.error_code == "TOOL_ACCESS_DENIED":
                failure = Failure(
                    code="TOOL_ACCESS_DENIED",
                    stage=STAGE,
                    message=f"tool {call['name']!r} is not allowed for this request",
                )
                out.append(
                    error_event(
                        deps,
                        request_id=ids.request_id,
                        failure=failure,
                        session_id=ids.session_id,
                        tenant_id=ids.tenant_id,
                        origin=msg,
                    )
                )
        log.info(
            "tool batch done", calls=len(results), errors=sum(1 for r in results if r["is_error"])
        )
        add_stage_time(progress, STAGE, ms_since(started))
        turn = {
            **ids.as_fields(),
            "turn": batch["turn"] + 1,
            "allowed_tools": allowed,
            "metadata": batch["metadata"],
            "tool_results": results,
            "progress": progress,
            "deadline": batch["deadline"],
        }
        value = deps.codec.encode("GenerationTurn", turn)
        topic = deps.settings.topics.generation
        out.insert(0, Outbound(topic=topic, key=ids.session_id.encode(), value=value))
        return StageResult(records=out)

    async def _mark_executing(self, ids: RequestIds) -> Failure | None:
        """Set the session EXECUTING; the failure when it is gone or not the caller's."""
        try:
            ctx = await self.deps.contexts.update(
                ids.tenant_id, ids.session_id, _executing, owner=ids.owner
            )
        except SessionForbiddenError as exc:
            text = "This session belongs to another user."
            return Failure(code=exc.code, message=text, stage=STAGE)
        if ctx is None:
            return Failure(code=ContextLostError.code, message=CONTEXT_LOST_TEXT, stage=STAGE)
        return None

    async def _journaled_call(
        self,
        msg: Inbound,
        call: dict[str, Any],
        index: int,
        batch: dict[str, Any],
        ids: RequestIds,
    ) -> ToolOutcome | None:
        """Run one call at most once (step journal). None means: outcome unknown."""
        journal = self.deps.journal
        step = tool_step_id(ids.request_id, batch["turn"], index)
        replayed = any(k == REPLAYED_FROM for k, _ in msg.headers)
        state = await journal.begin(ids.tenant_id, ids.session_id, step, rerun_unknown=replayed)
        if state.status == "done" and state.result is not None:
            return ToolOutcome.from_json(state.result)
        if state.status == "unknown":
            return _ALREADY_DEAD_LETTERED
        if state.status == "in_flight" and not self._safe_to_rerun(call["name"]):
            if not replayed:
                log.warning("tool call outcome unknown", tool=call["name"], step=step)
                await journal.mark_unknown(ids.tenant_id, ids.session_id, step)
                return None
            log.info("replayed by an operator: running the unknown step again", step=step)
        outcome = await self._run_call(call, index, batch, ids)
        await journal.complete(ids.tenant_id, ids.session_id, step, outcome.to_json())
        return outcome

    def _safe_to_rerun(self, name: str) -> bool:
        """Read-only tools and tools that take an idempotency key may run again."""
        policy = self.deps.tools.policy(name)
        return policy.read_only or policy.accepts_idempotency_key

    def _outcome_unknown(self, msg: Inbound, ids: RequestIds, names: list[str]) -> StageResult:
        """A side-effecting call was in flight when its worker died and cannot be repeated
        safely: the batch goes to the dead-letter topic for an operator (replaying it runs the
        call again) and the session is released so the user's next request is not stuck."""
        deps = self.deps
        reason = (
            f"outcome unknown for side-effecting tool call(s) {', '.join(names)}: "
            "a previous attempt started and never finished; check the tool, then replay"
        )
        failure = Failure(code="TOOL_OUTCOME_UNKNOWN", message=reason, stage=STAGE)
        s = deps.settings
        records = [
            dead_letter(
                msg,
                dlq_topic=s.topics.dlq(msg.topic),
                group=s.consumer_group,
                stage=STAGE,
                code=failure.code,
                error=ToolOutcomeUnknown(reason),
                attempt=1,
            ),
            error_event(
                deps,
                request_id=ids.request_id,
                failure=failure,
                session_id=ids.session_id,
                tenant_id=ids.tenant_id,
                origin=msg,
            ),
        ]

        async def release() -> None:
            await deps.contexts.release(ids.tenant_id, ids.session_id, ids.request_id)

        return StageResult(records=records, then=release)

    async def _run_call(
        self, call: dict[str, Any], index: int, batch: dict[str, Any], ids: RequestIds
    ) -> ToolOutcome:
        name: str = call["name"]
        allowed: list[str] = batch["allowed_tools"]
        if self.deps.settings.degradation.disable_tools:
            return ToolOutcome(
                content="Error: tools are disabled right now (degraded mode)",
                is_error=True,
                error_code="TOOLS_DISABLED",
            )
        if allowed and name not in allowed:
            return ToolOutcome(
                content=f"Error: tool access denied: {name}",
                is_error=True,
                error_code="TOOL_ACCESS_DENIED",
            )
        try:
            arguments = json.loads(call["arguments_json"])
        except ValueError:
            arguments = None
        if not isinstance(arguments, dict):
            return ToolOutcome(
                content="Error: tool arguments are not a JSON object",
                is_error=True,
                error_code="TOOL_INVALID_ARGUMENTS",
            )
        context = CallContext(
            tenant_id=ids.tenant_id,
            user_id=ids.user_id,
            request_id=ids.request_id,
            session_id=ids.session_id,
            request_allowed=tuple(allowed),
            idempotency_key=tool_step_id(ids.request_id, batch["turn"], index),
            bypass_cache=batch["metadata"].get("cache") == "bypass",
        )
        async with self._limit:
            return await self.deps.tools.execute(
                name, arguments, timeout_s=self.deps.settings.timeouts.tool_call_s, call=context
            )


def _executing(ctx: AgentContext | None) -> AgentContext | None:
    if ctx is None:
        return None
    ctx.state = "EXECUTING"
    return ctx
