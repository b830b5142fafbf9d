"""Per-agent admission on real Redis: an agent's own request and token windows (on top of the
tenant's), and the response cache scoped to the agent and its version, with its own policy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from agentstream.admission import Admission, AdmissionDenied, admitted_llm_call
from agentstream.agents import Agent
from agentstream.config import Settings
from agentstream.llm.base import Usage
from agentstream.schemas.contracts import AgentResponse, AgentState
from agentstream.schemas.contracts import Usage as WireUsage
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.keys import Keys
from agentstream.state.redis import RedisClient, redis_from_url
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


BUDGETED = Agent(
    name="budgeted",
    instructions="x",
    limits={"daily_tokens": 1000, "daily_cost_usd": 1.0},  # type: ignore[arg-type]
)
HISTORY = [{"role": "user", "content": "hi", "request_id": "r", "turn": 0}]


def _call(admission: Admission, agent: Agent, n: int, tenant: str = "acme") -> Any:
    return admitted_llm_call(
        admission,
        tenant_id=tenant,
        user_id="u1",
        call_id=f"{agent.name}-{n}:t0:llm",
        history=HISTORY,
        agent=agent,
    )


async def _day(admission: Admission, redis: RedisClient, key: str) -> dict[str, int]:
    """The day hash ``key`` once the usage queued so far is booked."""
    await admission.usage_writer.flush()
    raw = await redis.hgetall(key)
    return {k.decode(): int(v) for k, v in raw.items()}


def _today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


async def test_an_agents_daily_budget_is_reserved_and_settled_per_tenant(
    admission: Admission, redis: RedisClient
) -> None:
    """Each call reserves its estimate in the agent's day hash (under the tenant) as in the
    tenant's, and settles it to the actual usage: the totals are the actual usage, exactly."""
    agent_day = admission.keys.of_agent("budgeted").day("acme", _today())
    tenant_day = admission.keys.day("acme", _today())
    actual = [(40, 10, 0.01), (30, 5, 0.02), (60, 15, 0.005)]
    for n, (prompt, completion, cost) in enumerate(actual):
        async with _call(admission, BUDGETED, n) as grant:
            reserved = await redis.hget(agent_day, f"r:{grant.member}")
            assert int(reserved) == grant.estimate  # reserved while the call runs
            grant.record(Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost))
    tokens = sum(p + c for p, c, _ in actual)
    cost_micro = sum(round(c * 1_000_000) for _, _, c in actual)
    assert await _day(admission, redis, agent_day) == {"tokens": tokens, "cost_micro": cost_micro}
    assert await _day(admission, redis, tenant_day) == {"tokens": tokens, "cost_micro": cost_micro}
    # another tenant's use of the agent has its own budget
    async with _call(admission, BUDGETED, 9, tenant="globex") as grant:
        grant.record(Usage(prompt_tokens=1, completion_tokens=1))
    other = admission.keys.of_agent("budgeted").day("globex", _today())
    assert (await _day(admission, redis, other))["tokens"] == 2
    assert (await _day(admission, redis, agent_day))["tokens"] == tokens
    assert await admission.tenants_with_usage() == ["acme", "globex"]  # agents' days not tenants


async def test_a_call_that_would_cross_the_agents_token_budget_is_refused(
    admission: Admission, redis: RedisClient
) -> None:
    async with _call(admission, BUDGETED, 1) as grant:
        grant.record(Usage(prompt_tokens=600, completion_tokens=200))
    await admission.usage_writer.flush()  # booked behind the call: at most flush_s later
    with pytest.raises(AdmissionDenied) as info:  # 800 used + an estimate of ~260 > 1000
        async with _call(admission, BUDGETED, 2):
            pass
    denial = info.value.denial
    assert (denial.code, denial.limit) == ("BUDGET_EXCEEDED", "agent:daily_tokens")
    assert denial.message.startswith("This agent's daily budget of 1000 model tokens")
    assert not denial.retriable
    agent_day = admission.keys.of_agent("budgeted").day("acme", _today())
    assert await _day(admission, redis, agent_day) == {
        "tokens": 800
    }  # the refusal reserved nothing
    async with _call(admission, FREE, 3) as grant:  # the tenant and other agents run on
        grant.record(Usage(prompt_tokens=600, completion_tokens=200))


async def test_a_request_is_refused_once_the_agents_cost_budget_is_used_up(
    admission: Admission,
) -> None:
    async def admit(agent: Agent, n: int) -> Any:
        return await admission.admit_request(
            tenant_id="acme", user_id="u1", request_id=f"req-{n}", agent=agent
        )

    assert await admit(BUDGETED, 1) is None
    async with _call(admission, BUDGETED, 1) as grant:  # crosses 1 USD by its own cost
        grant.record(Usage(prompt_tokens=10, completion_tokens=10, cost_usd=1.25))
    await admission.usage_writer.flush()
    denied = await admit(BUDGETED, 2)
    assert denied is not None
    assert (denied.code, denied.limit) == ("BUDGET_EXCEEDED", "agent:daily_cost_usd")
    assert "This agent's daily cost budget of 1 USD for this organisation is used up" in (
        denied.message
    )
    assert await admit(FREE, 3) is None


async def test_the_agents_budget_costs_no_extra_round_trip(
    admission: Admission, redis: RedisClient
) -> None:
    """The agent's budget rides in the same script call as the tenant's windows and budget."""
    await admission.usage_writer.flush()

    async def scripts_run() -> int:
        if isinstance(redis, RedisCluster):  # every node's (the tenant's slot is on one)
            return _script_calls(
                await redis.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
            )
        return _script_calls(await redis.info("commandstats"))

    before = await scripts_run()
    grant = await admission.reserve_tokens(
        tenant_id="acme", user_id="u1", call_id="rt:t0:llm", history=HISTORY, agent=BUDGETED
    )
    assert grant.denial is None
    assert await scripts_run() == before + 1
    await grant.settle(Usage(prompt_tokens=5, completion_tokens=5))
    await admission.usage_writer.flush()
    assert await scripts_run() == before + 2  # one settlement books both day hashes


def _script_calls(stats: dict[str, Any]) -> int:
    """EVAL/EVALSHA calls in an INFO commandstats answer (one server's, or per node in a
    cluster: the sum over nodes)."""
    total = 0
    for name, value in stats.items():
        if name in ("cmdstat_evalsha", "cmdstat_eval"):
            total += int(value["calls"])
        elif isinstance(value, dict):
            total += _script_calls(value)
    return total
