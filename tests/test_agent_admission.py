"""Per-agent admission on real Redis: an agent's own request and token windows (on top of the
tenant's), and the response cache scoped to the agent and its version, with its own policy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agentstream.admission import Admission, AdmissionDenied, admitted_llm_call
from agentstream.agents import Agent
from agentstream.config import Settings
from agentstream.llm.base import Usage
from agentstream.schemas.contracts import AgentResponse, AgentState
from agentstream.schemas.contracts import Usage as WireUsage
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.keys import Keys
from agentstream.state.redis import redis_from_url
from agentstream.tools.registry import default_registry

pytestmark = pytest.mark.integration

LIMITED = Agent(
    name="limited",
    instructions="x",
    limits={"window_s": 60, "user_requests": 2, "user_tokens": 100},  # type: ignore[arg-type]
)
FREE = Agent(name="free", instructions="x")


@pytest.fixture
async def admission(redis_url: str, unique_prefix: str) -> Any:
    settings = Settings(
        redis_url=redis_url, state={"key_prefix": unique_prefix}, admission={"cache_enabled": True}
    )
    redis: Any = redis_from_url(redis_url)
    adm = Admission(
        redis,
        settings,
        contexts=ContextStore(redis, Keys(unique_prefix), ttl_s=60),
        tools=default_registry(),
    )
    yield adm
    await adm.aclose()
    await redis.aclose()


async def test_an_agents_request_window_counts_only_its_requests(admission: Admission) -> None:
    async def admit(agent: Agent, n: int) -> Any:
        return await admission.admit_request(
            tenant_id="acme", user_id="u1", request_id=f"{agent.name}-{n}", agent=agent
        )

    assert await admit(LIMITED, 1) is None
    assert await admit(LIMITED, 2) is None
    denied = await admit(LIMITED, 3)
    assert denied is not None
    assert denied.code == "RATE_LIMITED"
    assert denied.limit == "agent:user_requests"
    assert "for this user with this agent" in denied.message
    assert all([await admit(FREE, n) is None for n in range(5)])  # another agent is not limited


async def test_an_agents_token_window_refuses_a_call_over_it(admission: Admission) -> None:
    history = [{"role": "user", "content": "hi", "request_id": "r", "turn": 0}]

    def call(agent: Agent, n: int) -> Any:
        return admitted_llm_call(
            admission,
            tenant_id="acme",
            user_id="u1",
            call_id=f"r{n}:t0:llm",
            history=history,
            agent=agent,
        )

    async with call(LIMITED, 1) as grant:  # bigger than the window: runs only when it is empty
        grant.record(Usage(prompt_tokens=90, completion_tokens=5))
    with pytest.raises(AdmissionDenied) as info:
        async with call(LIMITED, 2):
            pass
    assert info.value.code == "RATE_LIMITED"
    async with call(FREE, 3) as grant:  # another agent's calls are not counted there
        grant.record(Usage(prompt_tokens=90, completion_tokens=5))


def _response(content: str) -> AgentResponse:
    return AgentResponse(
        response_id="resp-1",
        request_id="r1",
        session_id="s1",
        user_id="u1",
        tenant_id="acme",
        content=content,
        tool_calls=[],
        state=AgentState.COMPLETED,
        confidence=1.0,
        execution_time_ms=5,
        usage=WireUsage(),
        metadata={"model": "local-rules"},
        created_at=datetime.now(UTC),
    )


async def test_cached_answers_belong_to_one_agent_at_one_version(admission: Admission) -> None:
    ctx = AgentContext(session_id="s1", user_id="u1", tenant_id="acme")
    ctx.history.append({"role": "user", "content": "hi", "request_id": "r1", "turn": 0})

    async def lookup(agent: Agent) -> Any:
        return await admission.cached_answer(
            tenant_id="acme",
            user_id="u1",
            session_id="other",
            request_id="r2",
            message="hi",
            allowed_tools=[],
            metadata={},
            agent=agent,
        )

    stored = await admission.remember_answer(
        ctx=ctx,
        allowed_tools=[],
        metadata={},
        degraded=False,
        response=_response("Hello!"),
        agent=FREE,
    )
    assert stored
    hit = await lookup(FREE)
    assert hit is not None
    assert hit.content == "Hello!"
    assert await lookup(LIMITED) is None  # another agent
    assert await lookup(FREE.model_copy(update={"instructions": "y"})) is None  # new version
    no_cache = Agent(name="nocache", instructions="x", cache={"enabled": False})  # type: ignore[arg-type]
    assert not await admission.remember_answer(
        ctx=ctx,
        allowed_tools=[],
        metadata={},
        degraded=False,
        response=_response("Hi"),
        agent=no_cache,
    )
