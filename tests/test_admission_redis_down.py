"""Redis unavailable: rate limits fail open (with the warning metric), budgets fail closed, both
configurable. Each test starts and stops its own Redis server (never the session's)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from agentstream.admission import Admission
from agentstream.config import Settings
from agentstream.embedded import EmbeddedRedis
from agentstream.state.context import ContextStore
from agentstream.state.keys import Keys
from agentstream.tools.registry import default_registry

pytestmark = pytest.mark.integration

LIMITS = {"user_requests": 100, "user_tokens": 100_000}
BUDGET = {"daily_tokens": 1_000_000}


def outages(check: str, policy: str) -> float:
    value = REGISTRY.get_sample_value(
        "agentstream_admission_store_unavailable_total", {"check": check, "policy": policy}
    )
    return value or 0.0


AdmissionFactory = Callable[..., Admission]


@pytest.fixture
async def admission_for(
    own_redis: EmbeddedRedis, unique_prefix: str
) -> AsyncIterator[AdmissionFactory]:
    clients: list[Redis] = []

    def make(**admission: Any) -> Admission:
        settings = Settings(
            redis_url=own_redis.url,
            state={"key_prefix": unique_prefix},
            admission={"redis_timeout_s": 0.5, "cache_enabled": True, **admission},
        )
        redis = Redis.from_url(own_redis.url)
        clients.append(redis)
        contexts = ContextStore(redis, Keys(unique_prefix), ttl_s=60)
        return Admission(redis, settings, contexts=contexts, tools=default_registry())

    yield make
    for client in clients:
        await client.aclose()


async def admit(admission: Admission, request_id: str = "r1") -> Any:
    return await admission.admit_request(tenant_id="t", user_id="u", request_id=request_id)


async def reserve(admission: Admission) -> Any:
    return await admission.reserve_tokens(
        tenant_id="t",
        user_id="u",
        call_id="r1:t0:llm",
        history=[{"role": "user", "content": "hi", "request_id": "r1", "turn": 0}],
    )


async def test_defaults_rate_limits_open_budgets_closed(
    own_redis: EmbeddedRedis, admission_for: AdmissionFactory
) -> None:
    limits_only = admission_for(defaults=LIMITS)
    with_budget = admission_for(defaults={**LIMITS, **BUDGET})
    assert await admit(limits_only) is None  # Redis up: admitted
    assert await admit(with_budget, "r2") is None

    await own_redis.stop_async()

    opened = outages("requests_rate_limit", "allow")
    assert await admit(limits_only, "r3") is None  # fails open ...
    assert outages("requests_rate_limit", "allow") == opened + 1  # ... with the warning metric
    grant = await reserve(limits_only)
    assert grant.denial is None
    await grant.settle(None)  # settling during the outage does not raise

    closed = outages("requests_budget", "deny")
    denial = await admit(with_budget, "r4")  # a budget cannot be checked: fail closed
    assert denial is not None
    assert (denial.code, denial.limit, denial.retriable) == ("BUDGET_EXCEEDED", "unavailable", True)
    assert float(denial.metadata["retry_after_s"]) > 0
    assert outages("requests_budget", "deny") == closed + 1
    token_grant = await reserve(with_budget)
    assert token_grant.denial is not None
    assert token_grant.denial.code == "BUDGET_EXCEEDED"

    # the response cache degrades to a miss
    cached = await with_budget.cached_answer(
        tenant_id="t",
        user_id="u",
        session_id="s",
        request_id="r5",
        message="hi",
        allowed_tools=[],
        metadata={},
    )
    assert cached is None


async def test_policies_are_configurable(
    own_redis: EmbeddedRedis, admission_for: AdmissionFactory
) -> None:
    strict = admission_for(defaults=LIMITS, rate_limit_on_redis_error="deny")
    lenient = admission_for(defaults={**LIMITS, **BUDGET}, budget_on_redis_error="allow")
    await own_redis.stop_async()

    denial = await admit(strict)
    assert denial is not None
    assert (denial.code, denial.limit) == ("RATE_LIMITED", "unavailable")
    assert outages("requests_rate_limit", "deny") >= 1
    assert await admit(lenient) is None
    assert outages("requests_budget", "allow") >= 1


async def test_limits_work_again_when_redis_returns(
    own_redis: EmbeddedRedis, admission_for: AdmissionFactory
) -> None:
    admission = admission_for(defaults={"user_requests": 1})
    assert await admit(admission, "r1") is None
    await own_redis.stop_async()
    assert await admit(admission, "r2") is None  # open during the outage
    await own_redis.start_async()  # same port, empty (no persistence)
    assert await admit(admission, "r3") is None
    denial = await admit(admission, "r4")
    assert denial is not None
    assert denial.code == "RATE_LIMITED"
