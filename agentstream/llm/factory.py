"""Builds the configured ``LLMClient`` from settings.

``llm.model = "local"`` with no providers (the default) gives the rule-based offline stand-in.
Anything else gives a :class:`~agentstream.llm.routing.ModelRouter` whose routes are
:class:`~agentstream.llm.wrappers.FallbackLLM` chains of
``RetryingLLM(CircuitBreakerLLM(TimeoutLLM(provider)))`` entries (no breaker for ``local`` entries,
nor when breakers are disabled or no Redis is configured). The per-call timeout is the provider's
``timeout_s`` (default ``timeouts.llm_call_s``); the retry budget is ``llm.retry``. Each provider
is built once and shared by the routes that name it; its breaker key is ``llm:<provider name>``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agentstream.config import LLMProviderSettings, Settings
from agentstream.exceptions import ConfigError
from agentstream.llm.base import LLMClient
from agentstream.llm.local import MODEL_NAME, LocalRuleModel
from agentstream.llm.pricing import ModelPrice, PriceTable
from agentstream.llm.routing import ModelRouter
from agentstream.llm.wrappers import CircuitBreakerLLM, FallbackLLM, RetryingLLM, TimeoutLLM
from agentstream.observability.logging import get_logger
from agentstream.resilience.breaker import BreakerConfig, BreakerRegistry
from agentstream.resilience.retry import RetryPolicy
from agentstream.state.redis import RedisClient, redis_from_settings

log = get_logger(__name__)

LOCAL_MODEL_NAMES = frozenset({"local", MODEL_NAME})
LOCAL = "local"


def build_llm(settings: Settings, *, redis: RedisClient | None = None) -> LLMClient:
    """The configured client: the local stand-in, or a router over the configured routes.

    ``redis`` holds the shared breaker state; without it one is opened from ``redis_url`` (and
    closed by ``aclose``); with neither, breakers are off.
    """
    llm = settings.llm
    if llm.model.strip().lower() in LOCAL_MODEL_NAMES and not llm.providers and not llm.routes:
        return build_local(settings)
    return build_router(settings, redis=redis)


def build_local(settings: Settings) -> LocalRuleModel:
    llm = settings.llm
    return LocalRuleModel(
        latency_s=llm.local_latency_s, failure_rate=llm.local_failure_rate, seed=llm.local_seed
    )


def price_table(settings: Settings) -> PriceTable:
    return PriceTable(
        {
            model: ModelPrice(input_per_mtok=p.input_per_mtok, output_per_mtok=p.output_per_mtok)
            for model, p in settings.llm.prices.items()
        }
    )


def build_provider(name: str, config: LLMProviderSettings, settings: Settings) -> LLMClient:
    """One provider client, named ``name`` (the route entry and breaker use that name)."""
    timeout_s = config.timeout_s or settings.timeouts.llm_call_s
    if config.kind == "local":
        return build_local(settings)
    if config.kind == "openai":
        from agentstream.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(
            model=config.model,
            base_url=config.base_url,
            api_key=config.api_key,
            timeout_s=timeout_s,
            prices=price_table(settings),
            name=name,
            max_tokens_param=config.max_tokens_param,
            temperature=config.temperature,
        )
    from agentstream.llm.anthropic import AnthropicLLM

    return AnthropicLLM(
        model=config.model,
        base_url=config.base_url,
        api_key=config.api_key,
        timeout_s=timeout_s,
        prices=price_table(settings),
        name=name,
        temperature=config.temperature,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    """``llm.retry`` as a policy (the per-call timeout is applied inside the breaker instead)."""
    r = settings.llm.retry
    return RetryPolicy(
        max_attempts=r.max_attempts,
        base_delay_s=r.base_delay_s,
        max_delay_s=r.max_delay_s,
        max_total_s=r.max_total_s,
    )


def _unknown_model(settings: Settings) -> ConfigError:
    llm = settings.llm
    if not llm.providers and not llm.routes:
        return ConfigError(
            f"unsupported llm.model {llm.model!r}: no providers are configured, so only 'local' "
            "(the deterministic rule-based stand-in, not a language model) is available; "
            "configure llm.providers (openai / anthropic) and optionally llm.routes"
        )
    return ConfigError(
        f"llm.model {llm.model!r} names no route ({sorted(llm.routes)}) and no provider "
        f"({sorted(llm.providers)})"
    )


def build_router(settings: Settings, *, redis: RedisClient | None = None) -> ModelRouter:
    """Every configured route (plus one-entry routes for bare providers and ``local``)."""
    llm = settings.llm
    chains, default = _route_chains(settings)
    closers: list[Callable[[], Awaitable[None]]] = []
    registry = _breaker_registry(settings, redis, closers)
    used = {entry for chain in chains.values() for entry in chain}
    entries = {name: _route_entry(name, settings, registry, closers) for name in sorted(used)}
    routes: dict[str, LLMClient] = {
        route: FallbackLLM(
            [entries[e] for e in chain],
            route=route,
            force_fallback=settings.degradation.force_fallback,
        )
        for route, chain in chains.items()
    }
    return ModelRouter(
        routes,
        default=default,
        tenant_routes=llm.tenant_routes,
        request_routes=llm.request_routes,
        closers=closers,
    )


def _route_chains(settings: Settings) -> tuple[dict[str, list[str]], str]:
    """Each route's chain of provider names, and the default route; ConfigError if unknown."""
    llm = settings.llm
    chains: dict[str, list[str]] = {name: list(entries) for name, entries in llm.routes.items()}
    for name in [*llm.providers, LOCAL]:
        chains.setdefault(name, [name])
    default = llm.model.strip()
    if default.lower() in LOCAL_MODEL_NAMES and default not in chains:
        default = LOCAL
    if default not in chains:
        raise _unknown_model(settings)
    for route, chain in chains.items():
        missing = [e for e in chain if e != LOCAL and e not in llm.providers]
        if not chain or missing:
            raise ConfigError(f"llm route {route!r} names unknown providers {missing or '[]'}")
    return chains, default


def _breaker_registry(
    settings: Settings,
    redis: RedisClient | None,
    closers: list[Callable[[], Awaitable[None]]],
) -> BreakerRegistry | None:
    if not settings.llm.breaker.enabled:
        return None
    if redis is None and settings.redis_url:
        redis = redis_from_settings(settings)
        closers.append(redis.aclose)
    if redis is None:
        log.warning("no Redis configured: LLM circuit breakers are off")
        return None
    return BreakerRegistry(
        redis, BreakerConfig.from_settings(settings), namespace=settings.state.key_prefix
    )


def _route_entry(
    name: str,
    settings: Settings,
    registry: BreakerRegistry | None,
    closers: list[Callable[[], Awaitable[None]]],
) -> LLMClient:
    """One provider as a route entry: timeout, breaker (shared in Redis), retries."""
    config = settings.llm.providers.get(name) or LLMProviderSettings(kind="local", breaker=False)
    client = build_provider(name, config, settings)
    closers.insert(0, client.aclose)
    client = TimeoutLLM(client, config.timeout_s or settings.timeouts.llm_call_s)
    if registry is not None and config.breaker and config.kind != "local":
        client = CircuitBreakerLLM(client, registry.get(f"llm:{name}"))
    return RetryingLLM(client, retry_policy(settings))
