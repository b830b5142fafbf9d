"""Hostile ids and a runaway model (issue 14): keys that cannot collide across tenants, sessions
owned by (tenant, user), ids made safe before they reach the log, a cap on tool calls per turn.

The key-layout property is checked without Redis; everything else runs the pipeline on the real
broker and Redis."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentstream.admission.keys import AdmissionKeys
from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.llm.base import LLMRequest, LLMResult, ToolCall
from agentstream.llm.local import LocalRuleModel
from agentstream.observability.logging import log_safe_id
from agentstream.state.keys import Keys, key_part, key_part_decode
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.tools.cache import ToolResultCache
from tests.support.kafka import FAST_KAFKA

# ids built from the characters that used to separate key components, plus any unicode
_SPECIAL = st.sampled_from([":", "{", "}", "/", "%", "*", "|", "\\"])
_IDS = st.lists(
    st.one_of(_SPECIAL, st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))),
    min_size=1,
    max_size=12,
).map("".join)

KEYS = Keys("p")
ADMISSION = AdmissionKeys("p")
TOOL_CACHE = ToolResultCache(None, "p")  # type: ignore[arg-type]  # key building only


def _keys_of(tenant: str, session: str) -> list[str]:
    return [
        KEYS.context(tenant, session),
        KEYS.step(tenant, session, "r:t0:llm"),
        KEYS.request(tenant, session),  # `session` standing in for a request id
        ADMISSION.user_requests(tenant, session),  # `session` standing in for a user id
        ADMISSION.user_tokens(tenant, session),
        TOOL_CACHE.key(tenant, session, {"a": 1}),  # `session` standing in for a tool name
    ]


@settings(max_examples=500, deadline=None)
@given(a=st.tuples(_IDS, _IDS), b=st.tuples(_IDS, _IDS))
def test_distinct_id_pairs_never_share_a_key(a: tuple[str, str], b: tuple[str, str]) -> None:
    if a == b:
        return
    for key_a, key_b in zip(_keys_of(*a), _keys_of(*b), strict=True):
        assert key_a != key_b


@given(value=_IDS)
def test_key_parts_hold_no_separator_or_brace_and_decode_back(value: str) -> None:
    part = key_part(value)
    assert not set(part) & set(":{}*?[]")
    assert key_part_decode(part) == value


def test_the_reported_collisions_are_gone() -> None:
    assert KEYS.context("iso:a", "X") != KEYS.context("iso", "a:X")
    assert KEYS.request("iso:a", "R") != KEYS.request("iso", "a:R")
    # a session's context and journal share one Redis Cluster hash tag
    tag = KEYS.context("iso:a", "X").split("{", 1)[1].split("}", 1)[0]
    assert KEYS.step("iso:a", "X", "r:t0:llm").split("{", 1)[1].startswith(tag + "}")


def test_log_safe_id_escapes_and_truncates() -> None:
    assert log_safe_id("acme:u-1@x.y") == "acme:u-1@x.y"
    assert "\x00" not in log_safe_id("a\x00b")
    assert "\u202e" not in log_safe_id("a\u202eb")
    assert len(log_safe_id("x" * 10_000)) < 100


# --- pipeline ---------------------------------------------------------------------------------


class RecordingModel(LocalRuleModel):
    """The rule model, remembering every request it was sent; ``script`` answers first."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[LLMRequest] = []
        self.script: list[LLMResult] = []

    async def complete(self, request: LLMRequest) -> LLMResult:
        self.requests.append(request)
        if self.script:
            return self.script.pop(0)
        return await super().complete(request)


@pytest.fixture
async def pipeline(settings_factory: Callable[..., Settings]) -> Settings:
    s = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(s)
    return s


def _prompt_text(request: LLMRequest) -> str:
    return "\n".join(m.content or "" for m in request.messages)


@pytest.mark.integration
async def test_tenants_whose_ids_once_collided_keep_their_own_conversations(
    pipeline: Settings,
) -> None:
    model = RecordingModel()
    async with PipelineWorker(pipeline, llm=model), AgentClient(pipeline) as client:
        first = await client.ask(
            "the launch code is swordfish", session_id="X", user_id="u", tenant_id="iso:a"
        )
        second = await client.ask("hello there", session_id="a:X", user_id="u", tenant_id="iso")
    assert first.state == "COMPLETED", first
    assert second.state == "COMPLETED", second
    assert len(model.requests) == 2
    assert "swordfish" not in _prompt_text(model.requests[1])


@pytest.mark.integration
async def test_request_ids_of_two_tenants_do_not_collide_in_dedupe(pipeline: Settings) -> None:
    async with PipelineWorker(pipeline, llm=LocalRuleModel()), AgentClient(pipeline) as client:
        one = await client.request(
            new_request(
                "add 1 and 2", session_id="s1", user_id="u", tenant_id="iso:a", request_id="R"
            )
        )
        two = await client.request(
            new_request(
                "add 3 and 4", session_id="s2", user_id="u", tenant_id="iso", request_id="a:R"
            )
        )
    assert (one.state, one.content) == ("COMPLETED", "The answer is 3.")
    assert (two.state, two.content) == ("COMPLETED", "The answer is 7."), two


@pytest.mark.integration
async def test_a_session_belongs_to_its_tenant_and_user(pipeline: Settings) -> None:
    async with PipelineWorker(pipeline, llm=LocalRuleModel()), AgentClient(pipeline) as client:
        mine = await client.ask("hello", session_id="shared", user_id="u", tenant_id="acme")
        other_user = await client.ask("hi", session_id="shared", user_id="v", tenant_id="acme")
    assert mine.state == "COMPLETED"
    assert (other_user.state, other_user.error_code) == ("ERROR", "SESSION_FORBIDDEN")


@pytest.mark.integration
async def test_hostile_ids_reach_the_log_escaped_and_truncated(
    pipeline: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = "a\x00b" + "x" * 10_000
    with caplog.at_level(logging.INFO):
        async with PipelineWorker(pipeline, llm=LocalRuleModel()), AgentClient(pipeline) as client:
            answer = await client.request(
                new_request("hello", session_id=hostile, user_id="u", tenant_id="t")
            )
    assert (answer.state, answer.error_code) == ("ERROR", "INVALID_REQUEST")
    bound = [r.msg for r in caplog.records if isinstance(r.msg, dict) and "session_id" in r.msg]
    assert bound, "the rejection was logged with the request's ids"
    for event in bound:
        assert "\x00" not in event["session_id"]
        assert len(event["session_id"]) < 100


@pytest.mark.integration
async def test_a_turn_with_too_many_tool_calls_runs_none_and_tells_the_model(
    settings_factory: Callable[..., Settings],
) -> None:
    s = settings_factory(kafka=FAST_KAFKA, limits={"max_tool_calls_per_turn": 4})
    await ensure_topics(s)
    model = RecordingModel()
    calls = tuple(
        ToolCall(call_id=f"c{i}", name="calculator", arguments={"expression": f"{i}+1"})
        for i in range(40)
    )
    model.script = [LLMResult(content="", tool_calls=calls, finish_reason="tool_calls")]
    async with PipelineWorker(s, llm=model), AgentClient(s) as client:
        answer = await client.ask(
            "hello", session_id="s", user_id="u", tenant_id="t", allowed_tools=["calculator"]
        )
    assert answer.state == "COMPLETED", answer
    assert len(model.requests) == 2
    tool_messages = [m for m in model.requests[1].messages if m.role == "tool"]
    assert len(tool_messages) == 4  # the turn is recorded with the first `cap` calls only
    for m in tool_messages:
        assert "asked for 40 tool calls and the limit is 4" in (m.content or "")
