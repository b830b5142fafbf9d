"""Each stage handler through the in-memory pipeline (agentstream.testing): no broker, no Redis.

The same handlers, runner and failure policy a worker runs; these tests pin down what each
stage does with good and bad input. The integration tests run the same paths on real parts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.llm.exceptions import (
    LLMBadRequestError,
    LLMInvalidResponseError,
    LLMServerError,
)
from agentstream.processors.base import Outbound
from agentstream.processors.progress import new_progress
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.contracts import AgentRequest, AgentResponse, GenerationTurn, ToolResult
from agentstream.testing import FunctionModel, TestPipeline, tool_call


def _publish_request(
    p: TestPipeline, request_id: str, message: str, *, session_id: str = "s"
) -> None:
    """Put a request on the requests topic without waiting for its answer."""
    request = AgentRequest(
        request_id=request_id,
        session_id=session_id,
        user_id="user-1",
        tenant_id="tenant-1",
        message=message,
        created_at=datetime.now(UTC),
    )
    p.publish_raw(p.settings.topics.requests, p.codec.encode_record(request))


# --- validation -------------------------------------------------------------------------------


async def test_a_valid_request_is_answered_with_usage_and_metrics() -> None:
    async with TestPipeline() as p:
        answer = await p.ask("add 2 and 3", allowed_tools=["calculator"])
    assert (answer.state, answer.content) == ("COMPLETED", "The answer is 5.")
    assert [c.name for c in answer.tool_calls] == ["calculator"]
    assert [m.outcome for m in p.metrics] == ["COMPLETED"]
    assert p.metrics[0].turns == 2
    assert not p.errors


async def test_refused_requests_get_an_error_response_and_an_error_event() -> None:
    async with TestPipeline() as p:
        bad_id = await p.ask("hi", session_id="-starts-with-dash")
        empty = await p.ask("   ")
        unknown = await p.ask("hi", allowed_tools=["no.such.tool"])
    assert (bad_id.state, bad_id.error_code) == ("ERROR", "INVALID_REQUEST")
    assert empty.error_code == "EMPTY_MESSAGE"
    assert unknown.error_code == "UNKNOWN_TOOL"
    assert [e.code for e in p.errors] == ["INVALID_REQUEST", "EMPTY_MESSAGE", "UNKNOWN_TOOL"]
    assert all(e.stage == "validation" for e in p.errors)


async def test_a_repeated_request_id_is_not_run_twice() -> None:
    async with TestPipeline() as p:
        first = await p.ask("add 1 and 1", request_id="same")
        _publish_request(p, "same", "add 1 and 1", session_id="session-1")
        await p.run_until_quiet()
    assert first.state == "COMPLETED"
    assert len(p.responses) == 1
    assert [e.code for e in p.errors] == ["DUPLICATE_REQUEST"]


async def test_a_session_belongs_to_its_tenant_and_user() -> None:
    async with TestPipeline() as p:
        await p.ask("hello", session_id="s", user_id="alice")
        other = await p.ask("hello", session_id="s", user_id="mallory")
    assert other.error_code == "SESSION_FORBIDDEN"


async def test_undecodable_bytes_are_dead_lettered_with_their_reason() -> None:
    async with TestPipeline() as p:
        p.publish_raw(p.settings.topics.requests, b"\x00\x00\x00\x00\x01garbage", key="k")
        await p.run_until_quiet()
    [letter] = p.dead_letters
    headers = dl.header_map(letter.headers)
    assert headers[dl.ERROR_CODE] == "UNDECODABLE"
    assert headers[dl.STAGE] == "validation"
    assert letter.value == b"\x00\x00\x00\x00\x01garbage"
    assert [e.code for e in p.errors] == ["UNDECODABLE"]


# --- generation -------------------------------------------------------------------------------


async def test_a_model_that_never_stops_calling_tools_ends_after_max_turns() -> None:
    model = FunctionModel(lambda request: tool_call("calculator", {"expression": "1+1"}))
    async with TestPipeline(llm=model) as p:
        answer = await p.ask("loop", allowed_tools=["calculator"])
    assert answer.error_code == "MAX_TURNS_EXCEEDED"
    assert len(model.requests) == p.settings.limits.max_turns


async def test_one_malformed_answer_gets_one_repair_turn() -> None:
    calls: list[LLMRequest] = []

    def model(request: LLMRequest) -> LLMResult:
        calls.append(request)
        if len(calls) == 1:
            raise LLMInvalidResponseError("tool call arguments are not a JSON object")
        return LLMResult(content="repaired")

    async with TestPipeline(llm=FunctionModel(model)) as p:
        answer = await p.ask("hi")
    assert (answer.state, answer.content) == ("COMPLETED", "repaired")
    assert "could not be used" in (calls[1].messages[-1].content or "")


async def test_a_model_error_another_attempt_would_not_fix_is_the_answer() -> None:
    def model(request: LLMRequest) -> LLMResult:
        raise LLMBadRequestError("400")

    async with TestPipeline(llm=FunctionModel(model)) as p:
        answer = await p.ask("hi")
    assert (answer.state, answer.error_code) == ("ERROR", "LLM_BAD_REQUEST")
    assert [e.code for e in p.errors] == ["LLM_BAD_REQUEST"]


async def test_a_model_that_stays_down_goes_through_the_retry_tiers_to_the_dlq() -> None:
    def model(request: LLMRequest) -> LLMResult:
        raise LLMServerError("500")

    async with TestPipeline(llm=FunctionModel(model)) as p:
        _publish_request(p, "down", "hi")
        await p.run_until_quiet()
    tiers = len(p.settings.topics.retry_tiers_s)
    assert not p.responses  # no answer until an operator replays the dead letter
    retried = [t for t in p.published if ".retry." in t]
    assert sum(len(p.published[t]) for t in retried) == tiers
    [letter] = p.dead_letters
    assert dl.header_map(letter.headers)[dl.ERROR_CODE] == "LLM_SERVER_ERROR"


def _publish_orphan_turn(p: TestPipeline) -> None:
    """Request "r"'s turn after tool results, for session "gone", which has no context."""
    turn = GenerationTurn(
        request_id="r",
        session_id="gone",
        user_id="u",
        tenant_id="t",
        turn=1,
        allowed_tools=[],
        metadata={},
        tool_results=[
            ToolResult(call_id="c", name="calculator", content="5", is_error=False, duration_ms=1)
        ],
        progress=new_progress(datetime.now(UTC), 10),
    )
    p.publish_raw(p.settings.topics.generation, p.codec.encode_record(turn), key="gone")


async def test_a_turn_whose_context_expired_is_answered_context_lost() -> None:
    async with TestPipeline() as p:
        _publish_orphan_turn(p)
        answer = await p.wait_for_response("r")
    assert answer.error_code == "CONTEXT_LOST"
    assert "restate" in answer.content


async def test_the_request_that_follows_a_context_lost_answer_starts_afresh() -> None:
    """The turn's session is gone (Redis lost it): its CONTEXT_LOST answer is recorded all the
    same, so the request that follows that answer runs on a new history instead of being told
    twice; one that follows an answer the lost session gave is told."""
    async with TestPipeline() as p:
        _publish_orphan_turn(p)
        lost = await p.wait_for_response("r")
        ask = {"session_id": "gone", "user_id": "u", "tenant_id": "t", "message": "hello"}
        again = await p.send(
            AgentRequest(
                request_id="r2",
                previous_response_id=lost.response_id,
                created_at=datetime.now(UTC),
                **ask,
            )
        )
        stale = await p.send(
            AgentRequest(
                request_id="r3",
                previous_response_id="a-response-of-the-lost-history",
                created_at=datetime.now(UTC),
                **ask,
            )
        )
    assert lost.error_code == "CONTEXT_LOST"
    assert (again.state, again.error_code) == ("COMPLETED", None)
    assert stale.error_code == "CONTEXT_LOST"


# --- tools ------------------------------------------------------------------------------------


async def test_a_denied_tool_call_is_an_error_result_for_the_model() -> None:
    def model(request: LLMRequest) -> LLMResult:
        tool_messages = [m for m in request.messages if m.role == "tool"]
        if not tool_messages:
            return tool_call("current_time", {"timezone": "UTC"})
        return LLMResult(content=f"tool said: {tool_messages[-1].content}")

    async with TestPipeline(llm=FunctionModel(model)) as p:
        answer = await p.ask("what time", allowed_tools=["calculator"])
    assert answer.state == "COMPLETED"
    assert "access denied" in answer.content
    assert [e.code for e in p.errors] == ["TOOL_ACCESS_DENIED"]
    assert [(c.name, c.error_code) for c in answer.tool_calls] == [
        ("current_time", "TOOL_ACCESS_DENIED")
    ]


async def test_tool_arguments_that_are_not_an_object_are_refused() -> None:
    def model(request: LLMRequest) -> LLMResult:
        tool_messages = [m for m in request.messages if m.role == "tool"]
        if not tool_messages:
            result = tool_call("calculator", {})
            call = result.tool_calls[0]
            bad = type(call)(call_id=call.call_id, name=call.name, arguments=[1, 2])  # type: ignore[arg-type]
            return LLMResult(content="", tool_calls=(bad,))
        return LLMResult(content=tool_messages[-1].content or "")

    async with TestPipeline(llm=FunctionModel(model)) as p:
        answer = await p.ask("calc", allowed_tools=["calculator"])
    assert answer.tool_calls[0].error_code == "TOOL_INVALID_ARGUMENTS"
    assert "not a JSON object" in answer.content


# --- local hand-over --------------------------------------------------------------------------


class _Watching(TestPipeline):
    """Records, for each response published, who held its session at that moment."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held_at_publish: dict[str, str | None] = {}

    async def _publish(self, records: list[Outbound]) -> None:
        for r in records:
            if r.topic == self.settings.topics.responses:
                response = self.codec.decode_record(AgentResponse, r.value)
                ctx = await self.sessions.get(response.tenant_id, response.session_id)
                self.held_at_publish[response.request_id] = ctx and ctx.active_request
        await super()._publish(records)


async def test_first_turn_is_handed_over_and_only_its_final_write_frees_the_session_early() -> None:
    async with _Watching() as p:
        plain = await p.ask("hello there", session_id="s1")
        tooled = await p.ask("add 2 and 3", allowed_tools=["calculator"], session_id="s2")
    assert (plain.state, tooled.state) == ("COMPLETED", "COMPLETED")
    # the plain request's only turn never went through the generation topic
    generation = [
        p.codec.decode_record(GenerationTurn, r.value)
        for r in p.published[p.settings.topics.generation]
    ]
    assert [(t.request_id, t.turn) for t in generation] == [(tooled.request_id, 1)]
    # handed over: its answer's write freed the session (a next request queues behind it on
    # the same key); consumed from the topic: freed only once the response is out
    assert p.held_at_publish == {plain.request_id: None, tooled.request_id: tooled.request_id}
    assert (await p.sessions.get("tenant-1", "s2")).active_request is None


async def test_without_local_hand_over_every_turn_goes_through_the_generation_topic() -> None:
    settings = Settings(
        redis_url=None, kafka_bootstrap_servers=None, kafka={"local_handoff": False}
    )
    async with _Watching(settings=settings) as p:
        plain = await p.ask("hello there", session_id="s1")
    generation = [
        p.codec.decode_record(GenerationTurn, r.value)
        for r in p.published[p.settings.topics.generation]
    ]
    assert [(t.request_id, t.turn) for t in generation] == [(plain.request_id, 0)]
    assert p.held_at_publish == {plain.request_id: None}  # every first turn queues behind it
