"""Generation stage: agent.generation -> agent.tool-calls or agent.responses.

Appends tool results to the session history, builds the model input within the token budget,
calls the LLM, records usage and the assistant turn, then either publishes a tool-call batch
(state EXECUTING) or the final response (state COMPLETED). A request may use at most
``limits.max_turns`` LLM turns.

Redelivery safety: the LLM step goes through the step journal (a completed step is never re-run);
history entries are tagged with (request_id, turn) so re-appending them is a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from agentstream.admission import AdmissionDenied, admitted_llm_call
from agentstream.exceptions import AgentStreamError, cause_code
from agentstream.llm.base import ChatMessage, LLMRequest, LLMResult, ToolCall
from agentstream.llm.exceptions import (
    LLMContextTooLongError,
    LLMInvalidResponseError,
    LLMRateLimitedError,
    LLMTimeoutError,
)
from agentstream.llm.wrappers import route_of
from agentstream.observability.logging import get_logger
from agentstream.observability.tracing import chat_span
from agentstream.processors.base import (
    Inbound,
    Outbound,
    RequestIds,
    StageResult,
    ms_since,
    utcnow,
)
from agentstream.processors.outcomes import CONTEXT_LOST_TEXT, Failure, finish
from agentstream.processors.progress import add_stage_time, add_usage
from agentstream.processors.prompt import build_messages, canonical_arguments, history_entry
from agentstream.processors.signals import RetryLater
from agentstream.processors.stage import Stage
from agentstream.resilience.deadline import deadline_scope
from agentstream.resilience.exceptions import AttemptTimeoutError, DeadlineExceededError
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.exceptions import ContextLostError, SessionForbiddenError
from agentstream.state.journal import StepState, llm_step_id
from agentstream.tools.base import CallContext

STAGE = "generation"
# Confidence of an answer produced on a degraded path (simplified context, fallback model).
DEGRADED_CONFIDENCE = 0.6
TOO_MANY_TOOL_CALLS = "TOO_MANY_TOOL_CALLS"
DEFAULT_MAX_TOKENS = 1024
# The repair turn after a malformed answer (never stored in the history). The reason is the
# project's own error message (it names what was wrong, never content).
REPAIR_NOTE = (
    "[agentstream] Your previous reply could not be used ({reason}). Reply again to the "
    "conversation above. If you call a tool, its arguments must be one JSON object that "
    "matches the tool's parameters."
)
log = get_logger(__name__)


class GenerationStage(Stage):
    stage = STAGE
    schema = "GenerationTurn"

    async def _run(
        self, msg: Inbound, event: dict[str, Any], ids: RequestIds, started: Any
    ) -> StageResult:
        deps = self.deps
        progress: dict[str, Any] = event["progress"]
        turn: int = event["turn"]
        progress["turn"] = turn

        async def release() -> None:
            await deps.contexts.release(ids.tenant_id, ids.session_id, ids.request_id)

        def fail(
            code: str, text: str, *, retriable: bool = False, meta: dict[str, str] | None = None
        ) -> StageResult:
            failure = Failure(code=code, message=text, stage=STAGE, retriable=retriable)
            failed_tools = sorted({c["name"] for c in progress["tool_calls"] if c["is_error"]})
            if failed_tools and code != "RATE_LIMITED":
                # TOOL_FAILURE strategy, second step: the model saw the tool error and still
                # could not finish; tell the user what failed and what to do
                text = (
                    f"I could not complete this request because a tool failed "
                    f"({', '.join(failed_tools)}). Please try again later, or rephrase the "
                    "request so it does not need that tool."
                )
            records = finish(
                deps,
                ids=ids,
                progress=progress,
                content=text,
                failure=failure,
                metadata=meta,
                origin=msg,
            )
            return StageResult(records=records, then=release)

        if turn >= deps.settings.limits.max_turns:
            await self._set_state(ids, "ERROR")
            return fail(
                "MAX_TURNS_EXCEEDED",
                f"stopped after {deps.settings.limits.max_turns} model turns without "
                "a final answer",
            )
        # one round trip: the session context and the step journal entry of this LLM step
        step = llm_step_id(ids.request_id, turn)
        step_state, raw_ctx = await deps.journal.begin_and_read(
            ids.tenant_id, ids.session_id, step, deps.contexts.key(ids.tenant_id, ids.session_id)
        )
        try:
            ctx = await deps.contexts.update(
                ids.tenant_id,
                ids.session_id,
                lambda c: _with_tool_results(c, ids, turn, event),
                current=ContextStore.parse_get(raw_ctx),
                owner=ids.owner,
            )
        except SessionForbiddenError as exc:
            return fail(exc.code, "This session belongs to another user.")
        if ctx is None:
            return fail(
                ContextLostError.code,
                CONTEXT_LOST_TEXT,
            )
        try:
            result, fresh = await self._journaled_step(ctx, event, ids, turn, step_state)
        except AdmissionDenied as denied:  # token rate limit or daily budget
            await self._set_state(ids, "ERROR")
            return fail(
                denied.code, denied.message, retriable=denied.retriable, meta=denied.metadata
            )
        except AgentStreamError as exc:
            cause = cause_code(exc)
            log.warning("llm call failed", code=exc.code, cause=cause, error=type(exc).__name__)
            if isinstance(exc, DeadlineExceededError) or _past(event["deadline"]):
                await self._set_state(ids, "ERROR")
                return fail("TIMEOUT", "The request's deadline passed before the model answered.")
            if isinstance(exc, LLMRateLimitedError):
                # RATE_LIMITED strategy: answer now with when to come back
                await self._set_state(ids, "ERROR")
                after = exc.retry_after_s or 30.0
                return fail(
                    "RATE_LIMITED",
                    f"The model provider is rate limiting requests; try again in {after:.0f} s.",
                    retriable=True,
                    meta={"retry_after_s": f"{after:g}"},
                )
            if exc.retriable:
                # transient (provider down, breaker open without a fallback): the non-blocking
                # retry tiers take it; the session stays claimed so later turns cannot overtake
                because = f" after {cause}" if cause else ""
                raise RetryLater(exc.code, f"model call failed ({exc.code}{because})") from exc
            await self._set_state(ids, "ERROR")
            return fail(
                exc.code,
                f"The model could not answer this request ({exc.code}).",
                retriable=exc.retriable,
            )
        add_usage(progress, result.usage)
        cap = deps.settings.limits.max_tool_calls_per_turn
        too_many = len(result.tool_calls) > cap
        calls = result.tool_calls[:cap]  # a runaway turn is recorded with the first `cap` only
        state = "EXECUTING" if calls else "COMPLETED"
        entry = history_entry(
            ChatMessage(role="assistant", content=result.content, tool_calls=calls),
            request_id=ids.request_id,
            turn=turn,
        )
        # the assistant turn and the journal's "step done" in one atomic write
        done = (
            deps.journal.key(ids.tenant_id, ids.session_id, step),
            result.to_json(),
            deps.journal.retention_s,
        )
        ctx = await deps.contexts.update(
            ids.tenant_id,
            ids.session_id,
            lambda c: _with_assistant(c, entry, state),
            current=ctx,
            complete_step=done if fresh else None,
        )
        if ctx is None:
            if fresh:
                await deps.journal.complete(ids.tenant_id, ids.session_id, step, result.to_json())
            return fail(
                ContextLostError.code,
                CONTEXT_LOST_TEXT,
            )
        add_stage_time(progress, STAGE, ms_since(started))
        if too_many:
            log.warning("too many tool calls in one turn", calls=len(result.tool_calls), cap=cap)
            return StageResult(
                records=[
                    self._refused_calls(
                        event, ids, turn, calls, progress, asked=len(result.tool_calls)
                    )
                ]
            )
        if result.tool_calls:
            batch = {
                **ids.as_fields(),
                "turn": turn,
                "allowed_tools": event["allowed_tools"],
                "metadata": event["metadata"],
                "calls": [
                    {
                        "call_id": c.call_id,
                        "name": c.name,
                        "arguments_json": canonical_arguments(c.arguments),
                    }
                    for c in calls
                ],
                "progress": progress,
                "deadline": event["deadline"],
            }
            value = deps.codec.encode("ToolCallBatch", batch)
            topic = deps.settings.topics.tool_calls
            return StageResult(
                records=[Outbound(topic=topic, key=ids.session_id.encode(), value=value)]
            )
        meta = {"model": result.model or deps.llm.name}
        routed = route_of(result)
        if routed is not None:
            meta["route"] = routed.route
            meta["served_by"] = routed.served_by
            if routed.degraded:  # a fallback model answered
                progress["degraded"] = True
                meta.setdefault("degraded_reason", "fallback-model")
        if "degraded_reason" in event["metadata"]:
            meta["degraded_reason"] = event["metadata"]["degraded_reason"]
        records = finish(
            deps,
            ids=ids,
            progress=progress,
            content=result.content,
            confidence=DEGRADED_CONFIDENCE if progress["degraded"] else 1.0,
            metadata=meta,
        )
        if deps.admission is not None:  # response cache: stores only what is cacheable
            await deps.admission.remember_answer(
                ctx=ctx,
                request_id=ids.request_id,
                allowed_tools=event["allowed_tools"],
                metadata=event["metadata"],
                tool_calls=progress["tool_calls"],
                degraded=bool(progress.get("degraded")),
                response=records[0].value,
            )
        return StageResult(records=records, then=release)

    def _refused_calls(
        self,
        event: dict[str, Any],
        ids: RequestIds,
        turn: int,
        calls: Sequence[ToolCall],
        progress: dict[str, Any],
        *,
        asked: int,
    ) -> Outbound:
        """The next turn, with an error result per recorded call: the model asked for more
        tool calls than one turn may make, so none ran (no partial side effects)."""
        text = _too_many_calls_text(asked, len(calls))
        results = []
        for c in calls:
            results.append(
                {
                    "call_id": c.call_id,
                    "name": c.name,
                    "content": text,
                    "is_error": True,
                    "error_code": TOO_MANY_TOOL_CALLS,
                    "duration_ms": 0.0,
                }
            )
            progress["tool_calls"].append(
                {
                    "call_id": c.call_id,
                    "name": c.name,
                    "turn": turn,
                    "is_error": True,
                    "error_code": TOO_MANY_TOOL_CALLS,
                    "duration_ms": 0.0,
                }
            )
        next_turn = {
            **ids.as_fields(),
            "turn": turn + 1,
            "allowed_tools": event["allowed_tools"],
            "metadata": event["metadata"],
            "tool_results": results,
            "progress": progress,
            "deadline": event["deadline"],
        }
        value = self.deps.codec.encode("GenerationTurn", next_turn)
        topic = self.deps.settings.topics.generation
        return Outbound(topic=topic, key=ids.session_id.encode(), value=value)

    async def _journaled_step(
        self,
        ctx: AgentContext,
        event: dict[str, Any],
        ids: RequestIds,
        turn: int,
        state: StepState,
    ) -> tuple[LLMResult, bool]:
        """Run the LLM step once: a step already completed (redelivery, replay) is not re-run;
        one left in flight by a crashed worker runs again (a model call has no side effects).
        Returns the result and whether it is fresh (the caller records it in the journal)."""
        step = llm_step_id(ids.request_id, turn)
        if state.status == "done" and state.result is not None:
            log.info("llm step replayed from journal", turn=turn)
            return LLMResult.from_json(state.result), False
        if state.status == "in_flight":
            log.info("llm step left in flight by another attempt; running again", turn=turn)
        async with admitted_llm_call(
            self.deps.admission,
            tenant_id=ids.tenant_id,
            user_id=ids.user_id,
            call_id=step,
            history=ctx.history,
        ) as grant:
            result = await self._call_with_recovery(ctx, event)
            grant.record(result.usage)
        return result, True

    async def _call_with_recovery(self, ctx: AgentContext, event: dict[str, Any]) -> LLMResult:
        """LLM_TIMEOUT and context-too-long: try once more with a simplified context (a quarter
        of the history budget, a quarter of the output tokens); the answer is marked degraded.

        LLM_INVALID_RESPONSE (a malformed answer, e.g. tool arguments that are not a JSON
        object): one repair turn, the same input plus a note saying what was wrong. A second
        malformed answer is this request's error (it was neither retried as transient nor
        counted against the provider's breaker)."""
        try:
            return await self._call_model(ctx, event)
        except LLMInvalidResponseError as exc:
            log.warning("model answer unusable; one repair turn", code=exc.code)
            return await self._call_model(ctx, event, repair=REPAIR_NOTE.format(reason=exc))
        except (LLMTimeoutError, LLMContextTooLongError, AttemptTimeoutError) as exc:
            log.warning("retrying with a simplified context", code=exc.code)
            result = await self._call_model(ctx, event, simplified=True)
            event["progress"]["degraded"] = True
            event["metadata"] = {
                **event["metadata"],
                "degraded_reason": f"simplified-context:{exc.code}",
            }
            return result

    async def _call_model(
        self,
        ctx: AgentContext,
        event: dict[str, Any],
        *,
        simplified: bool = False,
        repair: str | None = None,
    ) -> LLMResult:
        deps = self.deps
        budget = deps.settings.limits.history_token_budget
        max_tokens = DEFAULT_MAX_TOKENS
        if simplified:
            budget, max_tokens = budget // 4, max(64, max_tokens // 4)
        history = history_for_request(ctx.history, event["request_id"])
        messages = build_messages(deps.settings.llm.system_prompt, history, budget)
        if repair is not None:
            messages = (*messages, ChatMessage(role="user", content=repair))
        allowed: list[str] = event["allowed_tools"]
        request = LLMRequest(
            messages=messages,
            tools=()
            if deps.settings.degradation.disable_tools
            else tuple(deps.tools.specs(allowed or None, call=_caller(event))),
            max_tokens=max_tokens,
            metadata=dict(event["metadata"]),
        )
        llm = deps.llm
        select = getattr(llm, "select", None)  # a ModelRouter picks the route per request
        timeout_s = deps.settings.timeouts.llm_call_s
        if select is not None:
            llm = select(tenant_id=event["tenant_id"], metadata=event["metadata"])
            # routes time each attempt themselves; this only caps the whole retry budget
            timeout_s += deps.settings.llm.retry.max_total_s
        try:
            with (
                deadline_scope(event["deadline"]),
                chat_span(llm.name, **{"agentstream.request_id": event["request_id"]}) as span,
            ):
                async with asyncio.timeout(timeout_s):
                    result = await llm.complete(request)
                span.set_attribute("gen_ai.response.model", result.model or llm.name)
                span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)
                return result
        except TimeoutError as exc:
            raise LLMTimeoutError(f"no answer within {timeout_s}s") from exc

    async def _set_state(self, ids: RequestIds, state: str) -> None:
        def change(ctx: AgentContext | None) -> AgentContext | None:
            if ctx is None or ctx.state == state:
                return None
            ctx.state = state
            return ctx

        await self.deps.contexts.update(ids.tenant_id, ids.session_id, change)


def _too_many_calls_text(asked: int, cap: int) -> str:
    return (
        f"Not run: this turn asked for {asked} tool calls and the limit is {cap} per turn. "
        f"Make at most {cap} tool calls in one turn."
    )


def _with_tool_results(
    ctx: AgentContext | None, ids: RequestIds, turn: int, event: dict[str, Any]
) -> AgentContext | None:
    if ctx is None:
        return None
    present = {
        e["tool_call_id"]
        for e in ctx.history
        if e["role"] == "tool" and e["request_id"] == ids.request_id
    }
    new = [r for r in event["tool_results"] if r["call_id"] not in present]
    if not new:
        if ctx.state == "THINKING":
            return None
        ctx.state = "THINKING"
        return ctx
    for r in new:
        ctx.history.append(
            history_entry(
                ChatMessage(
                    role="tool", content=r["content"], tool_call_id=r["call_id"], name=r["name"]
                ),
                request_id=ids.request_id,
                turn=turn,
            )
        )
    ctx.state = "THINKING"
    return ctx


def _with_assistant(
    ctx: AgentContext | None, entry: dict[str, Any], state: str
) -> AgentContext | None:
    if ctx is None:
        return None
    if not any(_same_turn(e, entry["request_id"], entry["turn"]) for e in ctx.history):
        ctx.history.append(entry)
    ctx.state = state
    return ctx


def _same_turn(entry: dict[str, Any], request_id: str, turn: int) -> bool:
    return bool(
        entry["role"] == "assistant" and entry["request_id"] == request_id and entry["turn"] == turn
    )


def _caller(event: dict[str, Any]) -> CallContext:
    """Who the tools would run for: the offer to the model follows the same permissions."""
    return CallContext(
        tenant_id=event["tenant_id"],
        user_id=event["user_id"],
        request_id=event["request_id"],
        session_id=event["session_id"],
        request_allowed=tuple(event["allowed_tools"]),
    )


def history_for_request(history: list[dict[str, Any]], request_id: str) -> list[dict[str, Any]]:
    """The conversation as this request saw it: everything before its first entry, plus its own
    entries. A request replayed from a dead-letter topic after the session moved on must not see
    (and answer) the later requests' messages."""
    first = next((i for i, e in enumerate(history) if e["request_id"] == request_id), None)
    if first is None:
        return history
    return history[:first] + [e for e in history[first:] if e["request_id"] == request_id]


def _past(deadline: datetime | None) -> bool:
    return deadline is not None and deadline <= utcnow()
