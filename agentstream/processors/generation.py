"""Generation stage: agent.generation -> agent.tool-calls or agent.responses.

Appends tool results to the session history, builds the model input within the token budget,
calls the LLM, records usage and the assistant turn, then either publishes a tool-call batch
(state EXECUTING) or the final response (state COMPLETED). A request may use at most
``limits.max_turns`` LLM turns and ``limits.max_tool_calls_per_turn`` calls per turn.

Redelivery safety: the LLM step goes through the step journal (a completed step is never re-run);
history entries are tagged with (request_id, turn) so re-appending them is a no-op.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from agentstream.admission import AdmissionDenied, admitted_llm_call
from agentstream.agents import Agent, InvalidOutputError, UnknownAgentError, check_output
from agentstream.exceptions import AgentStreamError, ErrorCode, cause_code
from agentstream.llm.base import ChatMessage, LLMClient, LLMRequest, LLMResult, ToolCall
from agentstream.llm.exceptions import (
    LLMContextTooLongError,
    LLMInvalidResponseError,
    LLMRateLimitedError,
    LLMTimeoutError,
)
from agentstream.llm.prompt import build_messages, canonical_arguments, history_entry
from agentstream.llm.routing import ModelRouter
from agentstream.llm.wrappers import route_of
from agentstream.observability.logging import get_logger
from agentstream.observability.tracing import chat_span
from agentstream.processors.base import (
    Handed,
    Inbound,
    Outbound,
    RequestIds,
    StageDeps,
    StageResult,
    ms_since,
    utcnow,
)
from agentstream.processors.delegation import agent_tools
from agentstream.processors.outcomes import (
    CONTEXT_LOST_TEXT,
    FORBIDDEN_TEXT,
    Failure,
    finish,
    response_id_for,
)
from agentstream.processors.progress import call_result, failed_tools, next_turn
from agentstream.processors.signals import RetryLater
from agentstream.processors.stage import Stage
from agentstream.processors.streaming import TurnStream, call_model
from agentstream.resilience.deadline import deadline_scope
from agentstream.resilience.exceptions import AttemptTimeoutError, DeadlineExceededError
from agentstream.schemas.contracts import (
    AgentState,
    GenerationTurn,
    ToolCallBatch,
)
from agentstream.schemas.contracts import ToolCall as WireToolCall
from agentstream.state.context import AgentContext
from agentstream.state.exceptions import ContextLostError, SessionForbiddenError
from agentstream.state.journal import StepState, llm_step_id
from agentstream.tools.base import CallContext

STAGE = "generation"
# Confidence of an answer produced on a degraded path (simplified context, fallback model).
DEGRADED_CONFIDENCE = 0.6
TOO_MANY_TOOL_CALLS = ErrorCode.TOO_MANY_TOOL_CALLS
DEFAULT_MAX_TOKENS = 1024
# The repair turn after a malformed answer (never stored in the history). The reason is the
# project's own error message (it names what was wrong, never content).
REPAIR_NOTE = (
    "[agentstream] Your previous reply could not be used ({reason}). Reply again to the "
    "conversation above. If you call a tool, its arguments must be one JSON object that "
    "matches the tool's parameters."
)
# The repair turn after a final answer that fails the agent's output schema.
OUTPUT_REPAIR_NOTE = (
    "[agentstream] Your previous answer does not satisfy the required output JSON Schema "
    "({reason}). Reply again with only the JSON value, satisfying the schema."
)
log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class _Answer:
    """The model's answer to this turn: fresh (just called) or from the step journal, and the
    reason it is degraded, if it is (a simplified context after a timeout)."""

    result: LLMResult
    fresh: bool
    degraded_reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class _Ending:
    """Ends the request of one turn with an ERROR response (the session is released)."""

    deps: StageDeps
    msg: Inbound
    ids: RequestIds
    turn: GenerationTurn
    agent: Agent | None

    def fail(
        self, code: str, text: str, *, retriable: bool = False, meta: dict[str, str] | None = None
    ) -> StageResult:
        failure = Failure(code=code, message=text, stage=STAGE, retriable=retriable)
        failed = failed_tools(self.turn.progress)
        if failed and code != ErrorCode.RATE_LIMITED:
            # TOOL_FAILURE strategy, second step: the model saw the tool error and still
            # could not finish; tell the user what failed and what to do
            text = (
                f"I could not complete this request because a tool failed "
                f"({', '.join(failed)}). Please try again later, or rephrase the "
                "request so it does not need that tool."
            )
        return finish(
            self.deps,
            ids=self.ids,
            progress=self.turn.progress,
            content=text,
            failure=failure,
            metadata=meta,
            request_metadata=self.turn.metadata,
            origin=self.msg,
            agent=self.agent,
        )


class GenerationStage(Stage[GenerationTurn]):
    stage = STAGE
    contract = GenerationTurn

    async def _run(
        self, msg: Inbound, turn: GenerationTurn, ids: RequestIds, started: datetime
    ) -> StageResult:
        turn.progress.turn = turn.turn
        agent = self._agent(turn)
        end = _Ending(deps=self.deps, msg=msg, ids=ids, turn=turn, agent=agent)
        if agent is None:  # the catalog lost the agent since validation (a changed deployment)
            await self._set_state(ids, AgentState.ERROR)
            return end.fail(ErrorCode.UNKNOWN_AGENT, f"unknown agent {turn.agent!r}")
        limit = agent.max_turns or self.deps.settings.limits.max_turns
        if turn.turn >= limit:
            await self._set_state(ids, AgentState.ERROR)
            text = f"stopped after {limit} model turns without a final answer"
            return end.fail(ErrorCode.MAX_TURNS_EXCEEDED, text)
        loaded = await self._load(ids, turn, end, msg.carried)
        if isinstance(loaded, StageResult):
            return loaded
        ctx, step_state = loaded
        answer = await self._answer(ctx, turn, ids, step_state, end, agent)
        if isinstance(answer, StageResult):
            return answer
        turn.progress.add_usage(
            answer.result.usage.prompt_tokens,
            answer.result.usage.completion_tokens,
            answer.result.usage.cost_usd,
        )
        calls = answer.result.tool_calls[: self.deps.settings.limits.max_tool_calls_per_turn]
        early = self._releases_early(msg)
        recorded = await self._record(ctx, ids, turn, answer, calls, release=early)
        if recorded is None:
            return end.fail(ContextLostError.code, CONTEXT_LOST_TEXT)
        turn.progress.add_stage_time(STAGE, ms_since(started))
        metadata = turn.metadata
        if answer.degraded_reason is not None:
            metadata = {**metadata, "degraded_reason": answer.degraded_reason}
        if len(calls) < len(answer.result.tool_calls):
            asked = len(answer.result.tool_calls)
            log.warning("too many tool calls in one turn", calls=asked, cap=len(calls))
            return StageResult(records=[self._refused_calls(turn, ids, calls, asked, metadata)])
        if calls:
            return StageResult(records=[self._tool_batch(turn, ids, calls, metadata)])
        return await self._final(recorded, turn, ids, answer, metadata, agent, released=early)

    def _releases_early(self, msg: Inbound) -> bool:
        """Whether a final answer's own write may free the session, before the response is
        published (a round trip less). Safe when the session's next request cannot overtake
        this response: this turn was handed over in this worker (the next request's first turn
        queues behind it on the same key), or no worker hands turns over (every first turn
        lands behind it on the generation topic). A turn consumed from the topic, where workers
        hand over, frees the session only after its response is out: the next request's first
        turn may run on another worker at once (docs/architecture.md, "Session store")."""
        return msg.via is not None or not self.deps.settings.kafka.local_handoff

    def _agent(self, turn: GenerationTurn) -> Agent | None:
        try:
            return self.deps.catalog.get(turn.agent)
        except UnknownAgentError:
            return None

    async def _load(
        self, ids: RequestIds, turn: GenerationTurn, end: _Ending, carried: object | None
    ) -> tuple[AgentContext, StepState] | StageResult:
        """One round trip: the session context and the step journal entry of this LLM step
        (none when validation read them with its claim and handed the turn over: ``carried``).
        The turn's inputs (the user's message at turn 0, the tool results after) are added to
        the history here in memory; :meth:`_record` writes them with the answer."""
        step = llm_step_id(ids.request_id, turn.turn)
        known = carried.take_reads(step) if isinstance(carried, Handed) else None
        if known is not None:
            step_state, current = known
        else:
            step_state, current = await self.deps.sessions.begin_step_reading(ids, step)
        if current is None:
            return end.fail(ContextLostError.code, CONTEXT_LOST_TEXT)
        if not current.owned_by(*ids.owner):
            return end.fail(SessionForbiddenError.code, FORBIDDEN_TEXT)
        return _with_turn_inputs(current, ids, turn), step_state

    async def _answer(
        self,
        ctx: AgentContext,
        turn: GenerationTurn,
        ids: RequestIds,
        step_state: StepState,
        end: _Ending,
        agent: Agent,
    ) -> _Answer | StageResult:
        """The model's answer, or the request's end when the model cannot answer now (a
        transient failure raises RetryLater: the retry tiers take the turn)."""
        try:
            return await self._journaled_step(ctx, turn, ids, step_state, agent)
        except AdmissionDenied as denied:  # token rate limit or daily budget
            await self._set_state(ids, AgentState.ERROR)
            return end.fail(
                denied.code, denied.message, retriable=denied.retriable, meta=denied.metadata
            )
        except AgentStreamError as exc:
            return await self._model_failure(exc, turn, ids, end)

    async def _model_failure(
        self, exc: AgentStreamError, turn: GenerationTurn, ids: RequestIds, end: _Ending
    ) -> StageResult:
        cause = cause_code(exc)
        log.warning("llm call failed", code=exc.code, cause=cause, error=type(exc).__name__)
        if isinstance(exc, InvalidOutputError):
            await self._set_state(ids, AgentState.ERROR)
            return end.fail(
                exc.code,
                f"The answer did not satisfy the agent's output schema ({exc.log_reason}), "
                "also after a repair turn.",
            )
        if isinstance(exc, DeadlineExceededError) or _past(turn.deadline):
            await self._set_state(ids, AgentState.ERROR)
            return end.fail(
                ErrorCode.TIMEOUT, "The request's deadline passed before the model answered."
            )
        if isinstance(exc, LLMRateLimitedError):
            # RATE_LIMITED strategy: answer now with when to come back
            await self._set_state(ids, AgentState.ERROR)
            after = exc.retry_after_s or 30.0
            return end.fail(
                ErrorCode.RATE_LIMITED,
                f"The model provider is rate limiting requests; try again in {after:.0f} s.",
                retriable=True,
                meta={"retry_after_s": f"{after:g}"},
            )
        if exc.retriable:
            # transient (provider down, breaker open without a fallback): the non-blocking
            # retry tiers take it; the session stays claimed so later turns cannot overtake
            because = f" after {cause}" if cause else ""
            raise RetryLater(exc.code, f"model call failed ({exc.code}{because})") from exc
        await self._set_state(ids, AgentState.ERROR)
        return end.fail(
            exc.code,
            f"The model could not answer this request ({exc.code}).",
            retriable=exc.retriable,
        )

    async def _record(
        self,
        ctx: AgentContext,
        ids: RequestIds,
        turn: GenerationTurn,
        answer: _Answer,
        calls: Sequence[ToolCall],
        *,
        release: bool,
    ) -> AgentContext | None:
        """The assistant turn (a runaway turn with its first calls only) and the journal's
        "step done" in one atomic write (for a final answer with ``release``, also the session's
        release and the response's id); None when the context expired meanwhile."""
        deps = self.deps
        step = llm_step_id(ids.request_id, turn.turn)
        state = AgentState.EXECUTING if calls else AgentState.COMPLETED
        entry = history_entry(
            ChatMessage(role="assistant", content=answer.result.content, tool_calls=tuple(calls)),
            request_id=ids.request_id,
            turn=turn.turn,
        )
        result = answer.result.to_json()
        updated = await deps.sessions.update(
            ids,
            lambda c: _with_assistant(c and _with_turn_inputs(c, ids, turn), entry, state),
            current=ctx,
            complete_step=(step, result) if answer.fresh else None,
            # a final answer: the same write frees the session and records the response (the
            # response is published next; a redelivery of this turn publishes it then)
            ends_with=None if calls or not release else response_id_for(ids.request_id),
        )
        if updated is None and answer.fresh:
            await deps.sessions.complete_step(ids, step, result)
        return updated

    def _tool_batch(
        self,
        turn: GenerationTurn,
        ids: RequestIds,
        calls: Sequence[ToolCall],
        metadata: dict[str, str],
    ) -> Outbound:
        batch = ToolCallBatch(
            request_id=ids.request_id,
            session_id=ids.session_id,
            user_id=ids.user_id,
            tenant_id=ids.tenant_id,
            turn=turn.turn,
            allowed_tools=turn.allowed_tools,
            metadata=metadata,
            calls=[
                WireToolCall(
                    call_id=c.call_id, name=c.name, arguments_json=canonical_arguments(c.arguments)
                )
                for c in calls
            ],
            progress=turn.progress,
            deadline=turn.deadline,
            stream=turn.stream,
            agent=turn.agent,
        )
        topic = self.deps.settings.topics.tool_calls
        return Outbound(topic=topic, key=ids.key, value=self.deps.codec.encode_record(batch))

    async def _final(
        self,
        ctx: AgentContext,
        turn: GenerationTurn,
        ids: RequestIds,
        answer: _Answer,
        metadata: dict[str, str],
        agent: Agent,
        *,
        released: bool,
    ) -> StageResult:
        """The final response; remembered by the response cache when cacheable. The session is
        released once it is published, unless the write that recorded the answer did already."""
        progress = turn.progress
        result = answer.result
        meta = {"model": result.model or self.deps.llm.name}
        routed = route_of(result)
        if routed is not None:
            meta["route"] = routed.route
            meta["served_by"] = routed.served_by
            if routed.degraded:  # a fallback model answered
                progress.degraded = True
                meta.setdefault("degraded_reason", "fallback-model")
        if "degraded_reason" in metadata:
            meta["degraded_reason"] = metadata["degraded_reason"]
        done = finish(
            self.deps,
            ids=ids,
            progress=progress,
            content=result.content,
            confidence=DEGRADED_CONFIDENCE if progress.degraded else 1.0,
            metadata=meta,
            request_metadata=turn.metadata,
            settle=not released,  # else settled by the write that recorded it (_record)
            agent=agent,
        )
        if self.deps.admission is not None and done.finished is not None:
            await self.deps.admission.remember_answer(
                ctx=ctx,
                allowed_tools=turn.allowed_tools,
                metadata=metadata,
                degraded=progress.degraded,
                response=done.finished,
                agent=agent,
            )
        return done

    def _refused_calls(
        self,
        turn: GenerationTurn,
        ids: RequestIds,
        calls: Sequence[ToolCall],
        asked: int,
        metadata: dict[str, str],
    ) -> Outbound:
        """The next turn, with an error result per recorded call: the model asked for more
        tool calls than one turn may make, so none ran (no partial side effects)."""
        text = _too_many_calls_text(asked, len(calls))
        results = [
            call_result(
                turn.progress,
                turn=turn.turn,
                call_id=c.call_id,
                name=c.name,
                content=text,
                is_error=True,
                error_code=TOO_MANY_TOOL_CALLS,
                duration_ms=0.0,
            )
            for c in calls
        ]
        following = next_turn(turn, results, metadata)
        topic = self.deps.settings.topics.generation
        return Outbound(topic=topic, key=ids.key, value=self.deps.codec.encode_record(following))

    async def _journaled_step(
        self,
        ctx: AgentContext,
        turn: GenerationTurn,
        ids: RequestIds,
        state: StepState,
        agent: Agent,
    ) -> _Answer:
        """Run the LLM step once: a step already completed (redelivery, replay) is not re-run;
        one left in flight by a crashed worker runs again (a model call has no side effects)."""
        if state.status == "done" and state.result is not None:
            log.info("llm step replayed from journal", turn=turn.turn)
            replayed = LLMResult.from_json(state.result)
            sink = self._sink(turn)
            if sink is not None:  # a consumer may have seen only a partial attempt
                await sink.replay(replayed.content)
            return _Answer(result=replayed, fresh=False)
        if state.status == "in_flight":
            log.info("llm step left in flight by another attempt; running again", turn=turn.turn)
        async with admitted_llm_call(
            self.deps.admission,
            tenant_id=ids.tenant_id,
            user_id=ids.user_id,
            call_id=llm_step_id(ids.request_id, turn.turn),
            history=ctx.history,
            agent=agent,
        ) as grant:
            # a cancel of the request stops the model call (RequestCancelled; see
            # processors/cancellation.py): outside the recovery, which must not retry it
            async with self.deps.cancellations.abortable(ids.request_id):
                answer = await self._call_with_recovery(ctx, turn, agent)
            grant.record(answer.result.usage)
            if agent.output_schema is not None and not answer.result.tool_calls:
                answer = await self._structured(ctx, turn, agent, answer)
                grant.record(answer.result.usage)
        return answer

    async def _structured(
        self, ctx: AgentContext, turn: GenerationTurn, agent: Agent, answer: _Answer
    ) -> _Answer:
        """A final answer checked against the agent's output schema: one repair turn (the
        answer and what is wrong with it), then INVALID_OUTPUT. The usage of both calls counts."""
        assert agent.output_schema is not None
        problem = check_output(agent.output_schema, answer.result.content)
        if problem is None:
            return answer
        log.warning("answer fails the output schema; one repair turn", reason=problem.log_reason)
        repair = (
            ChatMessage(role="assistant", content=answer.result.content),
            ChatMessage(role="user", content=OUTPUT_REPAIR_NOTE.format(reason=problem.reason)),
        )
        repaired = await self._call_model(ctx, turn, agent, repair=repair)
        result = replace(repaired, usage=answer.result.usage + repaired.usage)
        if not result.tool_calls:
            problem = check_output(agent.output_schema, result.content)
            if problem is not None:
                turn.progress.add_usage(
                    result.usage.prompt_tokens,
                    result.usage.completion_tokens,
                    result.usage.cost_usd,
                )
                raise InvalidOutputError(problem.log_reason)
        return _Answer(result=result, fresh=True, degraded_reason=answer.degraded_reason)

    async def _call_with_recovery(
        self, ctx: AgentContext, turn: GenerationTurn, agent: Agent
    ) -> _Answer:
        """LLM_TIMEOUT and context-too-long: try once more with a simplified context (a quarter
        of the history budget, a quarter of the output tokens); the answer is degraded.

        LLM_INVALID_RESPONSE (a malformed answer, e.g. tool arguments that are not a JSON
        object): one repair turn, the same input plus a note saying what was wrong. A second
        malformed answer is this request's error (it was neither retried as transient nor
        counted against the provider's breaker)."""
        try:
            return _Answer(result=await self._call_model(ctx, turn, agent), fresh=True)
        except LLMInvalidResponseError as exc:
            log.warning("model answer unusable; one repair turn", code=exc.code)
            repair = (ChatMessage(role="user", content=REPAIR_NOTE.format(reason=exc)),)
            result = await self._call_model(ctx, turn, agent, repair=repair)
            return _Answer(result=result, fresh=True)
        except (LLMTimeoutError, LLMContextTooLongError, AttemptTimeoutError) as exc:
            log.warning("retrying with a simplified context", code=exc.code)
            result = await self._call_model(ctx, turn, agent, simplified=True)
            turn.progress.degraded = True
            reason = f"simplified-context:{exc.code}"
            return _Answer(result=result, fresh=True, degraded_reason=reason)

    def _model_request(
        self,
        ctx: AgentContext,
        turn: GenerationTurn,
        agent: Agent,
        *,
        simplified: bool,
        repair: tuple[ChatMessage, ...],
    ) -> LLMRequest:
        """The agent's instructions, history within its budget, and the tools it offers (of
        those the request and the caller's permissions allow)."""
        deps = self.deps
        budget = agent.history_budget or deps.settings.limits.history_token_budget
        max_tokens = agent.max_output_tokens or DEFAULT_MAX_TOKENS
        if simplified:
            budget, max_tokens = budget // 4, max(64, max_tokens // 4)
        history = history_for_request(ctx.history, turn.request_id)
        messages = (*build_messages(agent.system_prompt, history, budget), *repair)
        allowed = turn.allowed_tools or None
        offered = (
            []
            if deps.settings.degradation.disable_tools
            else [
                *(s for s in deps.tools.specs(allowed, call=_caller(turn)) if agent.offers(s.name)),
                *agent_tools(agent, deps.catalog, allowed),
            ]
        )
        return LLMRequest(
            messages=messages,
            tools=tuple(offered),
            max_tokens=max_tokens,
            metadata=dict(turn.metadata),
            temperature=agent.temperature,
            output_schema=agent.output_schema,
        )

    async def _call_model(
        self,
        ctx: AgentContext,
        turn: GenerationTurn,
        agent: Agent,
        *,
        simplified: bool = False,
        repair: tuple[ChatMessage, ...] = (),
    ) -> LLMResult:
        deps = self.deps
        request = self._model_request(ctx, turn, agent, simplified=simplified, repair=repair)
        llm: LLMClient = deps.llm
        timeout_s = deps.settings.timeouts.llm_call_s
        if isinstance(llm, ModelRouter):  # the router picks the route per request
            llm = llm.select(
                tenant_id=turn.tenant_id, metadata=turn.metadata, agent_route=agent.model
            )
            # routes time each attempt themselves; this only caps the whole retry budget
            timeout_s += deps.settings.llm.retry.max_total_s
        try:
            with (
                deadline_scope(turn.deadline),
                chat_span(llm.name, **{"agentstream.request_id": turn.request_id}) as span,
            ):
                async with asyncio.timeout(timeout_s):
                    result = await call_model(llm, request, self._sink(turn))
                span.set_attribute("gen_ai.response.model", result.model or llm.name)
                span.set_attribute("gen_ai.usage.input_tokens", result.usage.prompt_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", result.usage.completion_tokens)
                return result
        except TimeoutError as exc:
            raise LLMTimeoutError(f"no answer within {timeout_s}s") from exc

    def _sink(self, turn: GenerationTurn) -> TurnStream | None:
        """Where this turn's text streams to, if the request streams."""
        if not turn.stream or self.deps.stream is None:
            return None
        return TurnStream(self.deps.stream, self.deps.codec, RequestIds.of(turn), turn.turn)

    async def _set_state(self, ids: RequestIds, state: AgentState) -> None:
        def change(ctx: AgentContext | None) -> AgentContext | None:
            if ctx is None or ctx.state == state:
                return None
            ctx.state = state
            return ctx

        await self.deps.sessions.update(ids, change)


def _too_many_calls_text(asked: int, cap: int) -> str:
    return (
        f"Not run: this turn asked for {asked} tool calls and the limit is {cap} per turn. "
        f"Make at most {cap} tool calls in one turn."
    )


def _with_turn_inputs(ctx: AgentContext, ids: RequestIds, turn: GenerationTurn) -> AgentContext:
    """The turn's inputs in the history, once each: the user's message (turn 0, with the
    request's tools and metadata) or the previous turn's tool results."""
    history = ctx.history
    if turn.message is not None and not any(
        e["request_id"] == ids.request_id and e["role"] == "user" for e in history
    ):
        entry = history_entry(
            ChatMessage(role="user", content=turn.message), request_id=ids.request_id, turn=0
        )
        history.append(entry)
        ctx.available_tools = list(turn.allowed_tools)
        ctx.metadata = {**ctx.metadata, **turn.metadata}
    present = {
        e["tool_call_id"]
        for e in history
        if e["role"] == "tool" and e["request_id"] == ids.request_id
    }
    for r in turn.tool_results:
        if r.call_id not in present:
            history.append(
                history_entry(
                    ChatMessage(
                        role="tool", content=r.content, tool_call_id=r.call_id, name=r.name
                    ),
                    request_id=ids.request_id,
                    turn=turn.turn,
                )
            )
    ctx.state = AgentState.THINKING
    return ctx


def _with_assistant(
    ctx: AgentContext | None, entry: dict[str, Any], state: AgentState
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


def _caller(turn: GenerationTurn) -> CallContext:
    """Who the tools would run for: the offer to the model follows the same permissions."""
    return CallContext(
        tenant_id=turn.tenant_id,
        user_id=turn.user_id,
        request_id=turn.request_id,
        session_id=turn.session_id,
        request_allowed=tuple(turn.allowed_tools),
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
