"""``Admission``: what the stages ask before work is done, and tell after it.

* validation: :meth:`Admission.admit_request` (requests per window per user and tenant, daily
  budgets not exhausted), then :meth:`Admission.cached_answer`;
* generation: :meth:`Admission.reserve_tokens` before each LLM call (estimated tokens against
  the token windows and the daily token budgets), :meth:`TokenGrant.settle` after it (actual
  usage), and :meth:`Admission.remember_answer` when the final answer is built.

The agent serving a request adds its own windows and daily budget (per tenant: keys under the
tenant's, see :mod:`.keys`) to the same script calls: no extra round trip.

Redis unavailable (refused, timed out): rate limits fail open and budgets fail closed by default
(``admission.rate_limit_on_redis_error`` / ``budget_on_redis_error``); every such event counts on
``agentstream_admission_store_unavailable_total`` and logs a warning. A denial is a
:class:`Denial` value, not an exception. Logs carry ids, codes and limits, never messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from agentstream.admission import metrics
from agentstream.admission.budget import BudgetCheck, budget_check, to_micro, utc_day
from agentstream.admission.cache import (
    CachedAnswer,
    ResponseCache,
    answer_ttl_s,
    bypassed,
    is_cacheable,
    is_single_turn,
    model_route,
)
from agentstream.admission.decisions import (
    BUDGET_EXCEEDED,
    RATE_LIMITED,
    Denial,
    budget_denial,
    rate_denial,
    store_denial,
)
from agentstream.admission.estimate import estimate_call_tokens
from agentstream.admission.exceptions import AdmissionDenied, AdmissionStoreUnavailable
from agentstream.admission.keys import AdmissionKeys
from agentstream.admission.limits import (
    TenantLimits,
    Window,
    agent_windows,
    request_windows,
    token_windows,
)
from agentstream.admission.rate_limit import Settlement, SlidingWindowLimiter, Verdict
from agentstream.admission.usage import TenantUsage, read_usage, tenants_with_usage
from agentstream.admission.usage_writer import UsageWriter
from agentstream.agents import Agent
from agentstream.config import AdmissionLimits, Settings
from agentstream.llm.base import Usage
from agentstream.observability.logging import get_logger
from agentstream.schemas.contracts import AgentResponse
from agentstream.state.context import AgentContext
from agentstream.state.redis import RedisClient
from agentstream.tools.base import ToolExecutor

log = get_logger(__name__)
T = TypeVar("T")

_STORE_ERRORS = (RedisError, OSError, TimeoutError)


@dataclass(kw_only=True)
class TokenGrant:
    """The reservation of one LLM call. ``denial`` set = the call must not be made."""

    denial: Denial | None = None
    member: str = ""
    tenant_id: str = ""
    day_keys: tuple[str, ...] = ()
    windows: list[Window] = field(default_factory=list)
    estimate: int = 0
    reserved: bool = False
    usage: Usage | None = None
    _settle: Callable[[TokenGrant, Usage | None], Awaitable[None]] | None = None

    def record(self, usage: Usage) -> None:
        """The call's actual usage, settled when the :func:`admitted_llm_call` block ends."""
        self.usage = usage

    async def settle(self, usage: Usage | None) -> None:
        """Replace the estimate with the actual usage (``None``: the call failed; release it).
        Never raises."""
        if self._settle is not None and self.denial is None:
            await self._settle(self, usage)


class admitted_llm_call:
    """Reserve an LLM call's estimated tokens on entry (raise :class:`AdmissionDenied` when a
    token window or the daily budget says no) and settle the usage given to
    :meth:`TokenGrant.record` on exit (none recorded = the call failed: release the reservation).
    ``admission`` None = no admission control: a no-op. A plain class rather than a
    generator-based context manager: it is entered once per model call."""

    __slots__ = ("_admission", "_agent", "_call_id", "_grant", "_history", "_tenant_id", "_user_id")

    def __init__(
        self,
        admission: Admission | None,
        *,
        tenant_id: str,
        user_id: str,
        call_id: str,
        history: Sequence[Mapping[str, Any]],
        agent: Agent | None = None,
    ) -> None:
        self._admission = admission
        self._tenant_id = tenant_id
        self._user_id = user_id
        self._call_id = call_id
        self._history = history
        self._agent = agent
        self._grant: TokenGrant | None = None

    async def __aenter__(self) -> TokenGrant:
        if self._admission is None:
            return TokenGrant()
        grant = await self._admission.reserve_tokens(
            tenant_id=self._tenant_id,
            user_id=self._user_id,
            call_id=self._call_id,
            history=self._history,
            agent=self._agent,
        )
        if grant.denial is not None:
            raise AdmissionDenied(grant.denial)
        self._grant = grant
        return grant

    async def __aexit__(self, *exc_info: object) -> None:
        grant, self._grant = self._grant, None
        if grant is not None:
            await grant.settle(grant.usage)


class ContextReader(Protocol):
    """Reads a session's context (the session store, or the context store alone)."""

    async def get(self, tenant_id: str, session_id: str) -> AgentContext | None: ...


class Admission:
    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        *,
        contexts: ContextReader,
        tools: ToolExecutor,
    ) -> None:
        self.settings = settings
        self.config = settings.admission
        self.keys = AdmissionKeys(settings.state.key_prefix)
        self.limits = TenantLimits(self.config)
        self.limiter = SlidingWindowLimiter(redis)
        self.usage_writer = UsageWriter(
            self.limiter, store=self._store, flush_s=self.config.usage_flush_s
        )
        self.cache = ResponseCache(
            redis, self.keys, ttl_s=self.config.cache_ttl_s, bucket_s=self.config.cache_bucket_s
        )
        self._redis = redis
        self._contexts = contexts
        self._tools = tools

    # -- requests (validation) -----------------------------------------------------------------

    async def admit_request(
        self,
        *,
        tenant_id: str,
        user_id: str,
        request_id: str,
        now_ms: int | None = None,
        agent: Agent | None = None,
    ) -> Denial | None:
        """Charge one request to the user's and the tenant's request windows (and those of the
        agent's own limits), and check the tenant's (and the agent's) daily budget is not used
        up. ``None`` = admitted."""
        limits = self.limits.for_tenant(tenant_id)
        windows = request_windows(self.keys, limits, tenant_id, user_id)
        if agent is not None:
            windows += agent_windows(
                self.keys, agent.limits, agent.name, tenant_id, user_id, tokens=False
            )
        budgets = self._budget_checks(limits, tenant_id, agent, 0, now_ms)
        if not windows and not budgets:
            return None
        try:
            verdict = await self._store(
                self.limiter.acquire([(w, 1) for w in windows], request_id, budgets, now_ms=now_ms)
            )
        except AdmissionStoreUnavailable as exc:
            return self._unavailable("requests", bool(windows), bool(budgets), exc)
        return self._judge("requests", verdict)

    async def admit(
        self,
        *,
        tenant_id: str,
        user_id: str,
        session_id: str,
        request_id: str,
        message: str,
        allowed_tools: Sequence[str],
        metadata: Mapping[str, str],
        agent: Agent | None = None,
    ) -> tuple[Denial | None, CachedAnswer | None]:
        """The validation step: the request check, then (if admitted) the cache lookup."""
        denial = await self.admit_request(
            tenant_id=tenant_id, user_id=user_id, request_id=request_id, agent=agent
        )
        if denial is not None:
            return denial, None
        cached = await self.cached_answer(
            tenant_id=tenant_id,
            user_id=user_id,
            session_id=session_id,
            request_id=request_id,
            message=message,
            allowed_tools=allowed_tools,
            metadata=metadata,
            agent=agent,
        )
        return None, cached

    # -- tokens (generation) -------------------------------------------------------------------

    async def reserve_tokens(
        self,
        *,
        tenant_id: str,
        user_id: str,
        call_id: str,
        history: Sequence[Mapping[str, Any]],
        now_ms: int | None = None,
        agent: Agent | None = None,
    ) -> TokenGrant:
        """Reserve the estimated tokens of one LLM call (``call_id``: unique per request and
        turn, so a redelivered call replaces its reservation); settle the grant after it."""
        limits = self.limits.for_tenant(tenant_id)
        estimate = estimate_call_tokens(self.settings, history)
        windows = token_windows(self.keys, limits, tenant_id, user_id)
        if agent is not None:
            windows += agent_windows(
                self.keys, agent.limits, agent.name, tenant_id, user_id, tokens=True
            )
        budgets = self._budget_checks(limits, tenant_id, agent, estimate, now_ms)
        grant = TokenGrant(
            member=call_id,
            tenant_id=tenant_id,
            day_keys=self._usage_keys(tenant_id, budgets, now_ms),
            windows=windows,
            estimate=estimate,
            _settle=self._settle_tokens,
        )
        if not windows and not budgets:
            return grant
        try:
            verdict = await self._store(
                self.limiter.acquire(
                    [(w, estimate) for w in windows], grant.member, budgets, now_ms=now_ms
                )
            )
        except AdmissionStoreUnavailable as exc:
            grant.denial = self._unavailable("tokens", bool(windows), bool(budgets), exc)
            return grant
        grant.denial = self._judge("tokens", verdict)
        grant.reserved = grant.denial is None
        return grant

    async def _settle_tokens(self, grant: TokenGrant, usage: Usage | None) -> None:
        """Queue the call's usage for booking (written behind in batches, never dropped: see
        :mod:`.usage_writer`)."""
        tokens = usage.total_tokens if usage else 0
        if usage is None and not grant.reserved:
            return
        self.usage_writer.add(
            grant.tenant_id,
            Settlement(
                charges=tuple((w, tokens) for w in grant.windows),
                member=grant.member,
                day_keys=grant.day_keys,
                tokens=tokens,
                cost_micro=to_micro(usage.cost_usd) if usage else 0,
            ),
        )

    async def aclose(self) -> None:
        """Book the usage still queued (the worker is stopping)."""
        await self.usage_writer.aclose()

    # -- response cache ------------------------------------------------------------------------

    async def cached_answer(
        self,
        *,
        tenant_id: str,
        user_id: str,
        session_id: str,
        request_id: str,
        message: str,
        allowed_tools: Sequence[str],
        metadata: Mapping[str, str],
        agent: Agent | None = None,
    ) -> CachedAnswer | None:
        """A stored answer for this exact single-turn question, if there is one."""
        if not self._cache_on(agent):
            return None
        if bypassed(metadata):
            metrics.CACHE.labels(result="bypass").inc()
            return None
        key = self.cache.key(
            tenant_id=tenant_id,
            user_id=user_id,
            message=message,
            allowed_tools=allowed_tools,
            model=self._cache_model(metadata, agent),
        )
        try:
            answer = await self._store(self.cache.get(key, tenant_id=tenant_id, user_id=user_id))
            if answer is not None:
                ctx = await self._store(self._contexts.get(tenant_id, session_id))
                if ctx is not None and not _fresh_session(ctx, request_id):
                    answer = None
        except AdmissionStoreUnavailable as exc:
            metrics.CACHE.labels(result="error").inc()
            log.warning("response cache unavailable", error=str(exc))
            return None
        metrics.CACHE.labels(result="miss" if answer is None else "hit").inc()
        return answer

    async def remember_answer(
        self,
        *,
        ctx: AgentContext,
        allowed_tools: Sequence[str],
        metadata: Mapping[str, str],
        degraded: bool,
        response: AgentResponse,
        agent: Agent | None = None,
    ) -> bool:
        """Store the final answer when it is cacheable."""
        if not self._cache_on(agent) or bypassed(metadata):
            return False
        request_id = response.request_id
        message = next(
            (
                e["content"]
                for e in ctx.history
                if e["role"] == "user" and e["request_id"] == request_id
            ),
            None,
        )
        calls = [{"name": c.name, "is_error": c.is_error} for c in response.tool_calls]
        if message is None or not is_cacheable(
            state=response.state,
            confidence=response.confidence,
            min_confidence=self.config.cache_min_confidence,
            single_turn=is_single_turn(ctx.history, request_id),
            tool_calls=calls,
            tool_ttl_s=self._tool_ttl_s,
            degraded=degraded,
        ):
            return False
        key = self.cache.key(
            tenant_id=ctx.tenant_id,
            user_id=ctx.user_id,
            message=message,
            allowed_tools=allowed_tools,
            model=self._cache_model(metadata, agent),
        )
        answer = CachedAnswer(
            tenant_id=ctx.tenant_id,
            user_id=ctx.user_id,
            content=response.content,
            confidence=response.confidence,
            model=response.metadata.get("model", ""),
            source_response_id=response.response_id,
            stored_at=time.time(),
        )
        ttl_s = (agent.cache.ttl_s if agent is not None else None) or self.cache.ttl_s
        try:
            await self._store(
                self.cache.put(key, answer, ttl_s=answer_ttl_s(ttl_s, calls, self._tool_ttl_s))
            )
        except AdmissionStoreUnavailable as exc:
            metrics.CACHE.labels(result="error").inc()
            log.warning("response cache unavailable", error=str(exc))
            return False
        metrics.CACHE.labels(result="stored").inc()
        return True

    # -- usage ---------------------------------------------------------------------------------

    async def usage(self, tenant_id: str) -> TenantUsage:
        return await read_usage(
            self._redis, self.keys, tenant_id, self.limits.for_tenant(tenant_id)
        )

    async def tenants_with_usage(self) -> list[str]:
        """Tenants that used tokens today, plus those configured by name."""
        return await tenants_with_usage(self._redis, self.keys, self.config.tenants)

    # -- helpers -------------------------------------------------------------------------------

    def _cache_on(self, agent: Agent | None) -> bool:
        """The agent's cache policy, else ``admission.cache_enabled``."""
        if agent is not None and agent.cache.enabled is not None:
            return agent.cache.enabled
        return self.config.cache_enabled

    def _tool_ttl_s(self, name: str) -> int:
        """How long ``name``'s results may be reused: the tool result cache's rule (read-only and
        configured cacheable), so the two caches agree on what is stable."""
        return self._tools.policy(name).result_ttl_s(self.settings.tools.cache_ttl_s)

    def _cache_model(self, metadata: Mapping[str, str], agent: Agent | None) -> str:
        """What the key knows of the answering side: the route, and the agent at its version
        (an answer is never served for another agent, nor after its definition changed)."""
        route = model_route(metadata, (agent.model if agent else None) or self.settings.llm.model)
        return route if agent is None else f"{route}|agent:{agent.name}@{agent.version}"

    def _budget_checks(
        self,
        limits: AdmissionLimits,
        tenant_id: str,
        agent: Agent | None,
        add_tokens: int,
        now_ms: int | None,
    ) -> list[BudgetCheck]:
        """The tenant's daily budget, then the agent's own (its usage under the agent's keys),
        each where one is set."""
        day = utc_day(time.time() if now_ms is None else now_ms / 1000)
        checks = [budget_check(limits, self.keys.day(tenant_id, day), add_tokens)]
        if agent is not None:
            key = self.keys.of_agent(agent.name).day(tenant_id, day)
            checks.append(budget_check(agent.limits, key, add_tokens, agent=agent.name))
        return [c for c in checks if c is not None]

    def _usage_keys(
        self, tenant_id: str, budgets: Sequence[BudgetCheck], now_ms: int | None
    ) -> tuple[str, ...]:
        """Where a call's usage is booked: the tenant's day hash always (usage is recorded for
        every tenant, budget or not), and the agent's when it has a budget."""
        tenant = [b.key for b in budgets if b.agent is None]
        if not tenant:
            day = utc_day(time.time() if now_ms is None else now_ms / 1000)
            tenant = [self.keys.day(tenant_id, day)]
        return (*tenant, *(b.key for b in budgets if b.agent is not None))

    async def _store(self, call: Awaitable[T]) -> T:
        """Await a Redis call within ``redis_timeout_s``; outages become one error type."""
        try:
            async with asyncio.timeout(self.config.redis_timeout_s):
                return await call
        except _STORE_ERRORS as exc:
            raise AdmissionStoreUnavailable(type(exc).__name__) from exc

    def _judge(self, check: str, verdict: Verdict) -> Denial | None:
        if verdict.allowed:
            metrics.DECISIONS.labels(check=check, outcome="allowed").inc()
            return None
        if verdict.window is not None:
            denial = rate_denial(verdict.window, verdict.retry_after_s)
        else:
            assert verdict.budget_check is not None  # not allowed: a window or a budget said no
            now_s = verdict.now_ms / 1000
            denial = budget_denial(verdict.budget, verdict.budget_check, now_s, check)
        metrics.DECISIONS.labels(check=check, outcome=denial.code.lower()).inc()
        log.info("admission denied", check=check, code=denial.code, limit=denial.limit)
        return denial

    def _unavailable(
        self, check: str, rate_limited: bool, budgeted: bool, exc: Exception
    ) -> Denial | None:
        cfg = self.config
        denial: Denial | None = None
        if budgeted:
            metrics.store_unavailable(f"{check}_budget", cfg.budget_on_redis_error)
            if cfg.budget_on_redis_error == "deny":
                denial = store_denial(BUDGET_EXCEEDED)
        if rate_limited:
            metrics.store_unavailable(f"{check}_rate_limit", cfg.rate_limit_on_redis_error)
            if denial is None and cfg.rate_limit_on_redis_error == "deny":
                denial = store_denial(RATE_LIMITED)
        log.warning(
            "admission store unavailable",
            check=check,
            error=str(exc),
            outcome="denied" if denial else "allowed",
        )
        return denial


def _fresh_session(ctx: AgentContext, request_id: str) -> bool:
    """No earlier request in the session and none running: a cached answer fits."""
    idle = ctx.active_request in (None, request_id)
    return idle and is_single_turn(ctx.history, request_id)
