"""Fallback chains, breakers around providers, named routes and the builder: local provider
servers, the rule-based local model and a real Redis (two routers = two workers)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agentstream.config import LLMSettings, Settings
from agentstream.exceptions import ConfigError
from agentstream.llm.base import ChatMessage, LLMClient, LLMRequest, LLMResult
from agentstream.llm.exceptions import (
    LLMBadRequestError,
    LLMContextTooLongError,
    LLMInvalidResponseError,
    LLMServerError,
)
from agentstream.llm.factory import build_llm
from agentstream.llm.local import MODEL_NAME, LocalRuleModel
from agentstream.llm.routing import ModelRouter
from agentstream.llm.wrappers import FallbackLLM, RoutedResult, is_degraded, route_of
from agentstream.resilience.deadline import deadline_scope
from agentstream.resilience.exceptions import DeadlineExceededError
from tests.support.llm_servers import FakeLLMServer, Reply, openai_completion, openai_error

REQUEST = LLMRequest(messages=(ChatMessage(role="user", content="hello"),))


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as s:
        yield s


class Failing:
    """An LLMClient that always raises ``error``."""

    def __init__(self, error: Exception, name: str = "failing") -> None:
        self.error = error
        self.calls = 0
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: LLMRequest) -> LLMResult:
        self.calls += 1
        raise self.error

    async def health_check(self) -> bool:
        return False

    async def aclose(self) -> None:
        return None


def llm_settings(server: FakeLLMServer, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "model": "main",
        "providers": {
            "primary": {
                "kind": "openai",
                "model": "gpt-test",
                "base_url": server.base_url,
                "api_key": "sk-primary-secret",
                "timeout_s": 5,
            },
            "claude": {
                "kind": "anthropic",
                "model": "claude-test",
                "base_url": server.root_url,
                "api_key": "sk-claude-secret",
            },
        },
        "routes": {"main": ["primary", "local"], "premium": ["claude", "primary", "local"]},
        "tenant_routes": {"vip": "premium"},
        "retry": {"max_attempts": 1},
        "breaker": {"failure_threshold": 2, "recovery_timeout_s": 0.3},
        "prices": {"gpt-test": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}},
    }
    values.update(overrides)
    return values


async def test_fallback_serves_from_the_next_entry_and_marks_degraded() -> None:
    primary = Failing(LLMServerError("500"), name="primary")
    chain = FallbackLLM([primary, LocalRuleModel()], route="main")
    result = await chain.complete(REQUEST)
    assert isinstance(result, RoutedResult)
    assert result.degraded
    assert is_degraded(result)
    assert (result.route, result.served_by) == ("main", MODEL_NAME)
    assert result.skipped == ("primary: LLM_SERVER_ERROR",)
    assert result.model == MODEL_NAME
    assert "(local rule model)" in result.content


async def test_first_entry_answering_is_not_degraded() -> None:
    result = await FallbackLLM([LocalRuleModel()], route="r").complete(REQUEST)
    routed = route_of(result)
    assert routed is not None
    assert not routed.degraded
    assert routed.skipped == ()


@pytest.mark.parametrize(
    "error",
    [
        LLMBadRequestError("400"),
        LLMContextTooLongError("too long"),
        LLMInvalidResponseError("tool call arguments are not a JSON object"),
        DeadlineExceededError("late"),
    ],
)
async def test_errors_another_model_would_not_fix_are_raised(error: Exception) -> None:
    secondary = LocalRuleModel()
    with pytest.raises(type(error)):
        await FallbackLLM([Failing(error), secondary]).complete(REQUEST)
    assert secondary.calls == 0


async def test_last_entry_error_is_raised() -> None:
    with pytest.raises(LLMServerError):
        await FallbackLLM([Failing(LLMServerError("a")), Failing(LLMServerError("b"))]).complete(
            REQUEST
        )


async def test_breaker_opened_by_one_worker_skips_the_provider_for_all(
    server: FakeLLMServer, settings_factory: Callable[..., Settings]
) -> None:
    server.default = openai_error(500, "internal", type_="server_error")
    settings = settings_factory(llm=llm_settings(server))
    worker_a, worker_b = build_llm(settings), build_llm(settings)
    try:
        for _ in range(2):  # two 500s from worker A open the shared breaker
            result = await worker_a.complete(REQUEST)
            assert is_degraded(result)
            assert route_of(result).skipped == ("primary: LLM_SERVER_ERROR",)  # type: ignore[union-attr]
        assert len(server.arrivals) == 2
        for worker in (worker_a, worker_b):  # both now skip the provider without calling it
            result = await worker.complete(REQUEST)
            assert route_of(result).skipped == ("primary: CIRCUIT_OPEN",)  # type: ignore[union-attr]
        assert len(server.arrivals) == 2

        server.default = None  # the provider recovers; after the recovery timeout a probe closes it
        start = time.monotonic()
        while True:
            result = await worker_b.complete(REQUEST)
            if not is_degraded(result):
                break
            assert time.monotonic() - start < 5, "breaker never half-opened"
            await _tick()
        assert result.model == "test-model"
        assert result.usage.cost_usd > 0 or result.usage.prompt_tokens > 0
        assert not is_degraded(await worker_a.complete(REQUEST))
    finally:
        await worker_a.aclose()
        await worker_b.aclose()


async def _tick() -> None:
    await asyncio.sleep(0.02)


async def test_routes_by_request_metadata_then_tenant_then_default(
    server: FakeLLMServer, settings_factory: Callable[..., Settings]
) -> None:
    server.push(Reply(body=openai_completion("from primary")))
    router = build_llm(settings_factory(llm=llm_settings(server)))
    try:
        assert isinstance(router, ModelRouter)
        assert router.route_name() == "main"
        assert router.route_name(tenant_id="vip") == "premium"
        assert router.route_name(tenant_id="vip", metadata={"model": "local"}) == "local"
        assert router.route_name(metadata={"model": "no-such-route"}) == "main"
        assert router.route_name(tenant_id="other", metadata={"model": "primary"}) == "primary"

        result = await router.complete(REQUEST)
        assert route_of(result).route == "main"  # type: ignore[union-attr]
        assert result.content == "from primary"
        result = await router.select(tenant_id="vip").complete(REQUEST)
        routed = route_of(result)
        assert routed is not None
        assert (routed.route, routed.served_by) == ("premium", "claude")
        assert server.arrivals[-1].wire == "anthropic"
        local = LLMRequest(messages=REQUEST.messages, metadata={"model": "local"})
        assert (await router.complete(local)).model == MODEL_NAME
    finally:
        await router.aclose()


async def test_request_routes_can_be_switched_off(
    server: FakeLLMServer, settings_factory: Callable[..., Settings]
) -> None:
    router = build_llm(settings_factory(llm=llm_settings(server, request_routes=False)))
    try:
        assert isinstance(router, ModelRouter)
        assert router.route_name(metadata={"model": "local"}) == "main"
    finally:
        await router.aclose()


def test_builder_defaults_and_validation() -> None:
    assert isinstance(build_llm(Settings()), LocalRuleModel)
    with pytest.raises(ConfigError, match="only 'local'"):
        build_llm(Settings(llm=LLMSettings(model="gpt-x")))
    bad_route = LLMSettings(model="main", routes={"main": ["nope", "local"]})
    with pytest.raises(ConfigError, match="nope"):
        build_llm(Settings(llm=bad_route))
    bad_tenant = LLMSettings(model="local", routes={"r": ["local"]}, tenant_routes={"t": "zzz"})
    with pytest.raises(ConfigError, match="zzz"):
        build_llm(Settings(llm=bad_tenant))


async def test_builder_without_redis_has_no_breakers_and_masks_keys() -> None:
    settings = Settings(
        llm=LLMSettings.model_validate(
            {
                "model": "p",
                "providers": {
                    "p": {
                        "kind": "openai",
                        "model": "m",
                        "base_url": "http://127.0.0.1:9/v1",
                        "api_key": "sk-hide-me",
                    }
                },
            }
        )
    )
    client: LLMClient = build_llm(settings)
    try:
        assert isinstance(client, ModelRouter)
        assert set(client.routes) == {"p", "local"}
        assert "sk-hide-me" not in str(settings.safe_dump())
        assert "sk-hide-me" not in repr(settings)
    finally:
        await client.aclose()


async def test_deadline_scope_reaches_through_the_route(
    server: FakeLLMServer, settings_factory: Callable[..., Settings]
) -> None:
    reply = openai_error(429, "slow down", type_="rate_limit_error")
    reply.headers["Retry-After"] = "5"
    server.push(reply)
    settings = settings_factory(llm=llm_settings(server, retry={"max_attempts": 3}))
    router = build_llm(settings)
    try:
        with deadline_scope(time.time() + 1.0), pytest.raises(DeadlineExceededError) as caught:
            await router.complete(REQUEST)
        assert caught.value.code == "TIMEOUT"
        assert len(server.arrivals) == 1
    finally:
        await router.aclose()


async def test_timeouts_count_toward_the_breaker(
    server: FakeLLMServer, settings_factory: Callable[..., Settings]
) -> None:
    """The per-call timeout sits inside the breaker: a provider that hangs opens it."""
    server.default = Reply(delay_s=2.0, body=openai_completion("too late"))
    overrides = llm_settings(server)
    overrides["providers"]["primary"]["timeout_s"] = 0.2
    router = build_llm(settings_factory(llm=overrides))
    try:
        for _ in range(2):
            result = await router.complete(REQUEST)
            assert route_of(result).skipped == ("primary: LLM_TIMEOUT",)  # type: ignore[union-attr]
        started = time.monotonic()
        result = await router.complete(REQUEST)
        assert route_of(result).skipped == ("primary: CIRCUIT_OPEN",)  # type: ignore[union-attr]
        assert time.monotonic() - started < 0.2  # no call, no wait
        assert len(server.arrivals) == 2
    finally:
        await router.aclose()
