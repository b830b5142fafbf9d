"""Tool-execution stage: agent.tool-calls -> agent.generation.

Runs a batch's calls concurrently (bounded by ``limits.tool_concurrency``), each with its own
timeout. A failing, denied or invalid call does not fail its siblings: its error becomes that
call's result, which goes back to the model.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from agentstream.observability.logging import bind_request, get_logger
from agentstream.processors.base import (
    Inbound,
    Outbound,
    RequestIds,
    StageDeps,
    StageResult,
    ms_since,
    utcnow,
)
from agentstream.processors.outcomes import Failure, error_event, finish
from agentstream.processors.progress import add_stage_time
from agentstream.processors.signals import DeadLetter
from agentstream.schemas.exceptions import SerializationError
from agentstream.state.context import AgentContext
from agentstream.tools.base import CallContext, ToolOutcome

STAGE = "tools"
MAX_RESULT_CHARS = 16 * 1024
log = get_logger(__name__)


class ToolExecutionStage:
    def __init__(self, deps: StageDeps) -> None:
        self.deps = deps
        self._limit = asyncio.Semaphore(deps.settings.limits.tool_concurrency)

    async def __call__(self, msg: Inbound) -> StageResult:
        started = utcnow()
        try:
            batch = await self.deps.codec.decode_async("ToolCallBatch", msg.value)
        except SerializationError as exc:
            raise DeadLetter("UNDECODABLE", f"cannot decode ToolCallBatch: {exc}") from exc
        ids = RequestIds.of(batch)
        with bind_request(request_id=ids.request_id, session_id=ids.session_id, stage=STAGE):
            return await self._run(msg, batch, ids, started)

    async def _run(
        self, msg: Inbound, batch: dict[str, Any], ids: RequestIds, started: Any
    ) -> StageResult:
        deps = self.deps
        progress: dict[str, Any] = batch["progress"]
        ctx = await deps.contexts.update(ids.tenant_id, ids.session_id, _executing)
        if ctx is None:
            text = "Your conversation context has expired. Please restate your request."
            failure = Failure(code="CONTEXT_LOST", message=text, stage=STAGE)
            return StageResult(
                records=finish(
                    deps, ids=ids, progress=progress, content=text, failure=failure, origin=msg
                )
            )
        allowed: list[str] = batch["allowed_tools"]
        outcomes = await asyncio.gather(
            *(self._run_call(call, index, batch, ids) for index, call in enumerate(batch["calls"]))
        )
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

    async def _run_call(
        self, call: dict[str, Any], index: int, batch: dict[str, Any], ids: RequestIds
    ) -> ToolOutcome:
        name: str = call["name"]
        allowed: list[str] = batch["allowed_tools"]
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
            idempotency_key=step_id(ids.request_id, batch["turn"], index),
            bypass_cache=batch["metadata"].get("cache") == "bypass",
        )
        async with self._limit:
            return await self.deps.tools.execute(
                name, arguments, timeout_s=self.deps.settings.timeouts.tool_call_s, call=context
            )


def step_id(request_id: str, turn: int, index: int) -> str:
    """Deterministic id of one tool call: stable across redelivery and replay."""
    return f"{request_id}:t{turn}:c{index}"


def _executing(ctx: AgentContext | None) -> AgentContext | None:
    if ctx is None:
        return None
    ctx.state = "EXECUTING"
    return ctx
