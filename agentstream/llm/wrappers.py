"""Resilience as wrappers around one interface: every wrapper is an ``LLMClient`` holding another.

A route entry is built as ``RetryingLLM(CircuitBreakerLLM(TimeoutLLM(provider)))``: each attempt
passes the breaker, so provider failures (``counts_for_breaker``: timeouts — the per-call timeout
sits inside the breaker —, connection errors, 5xx, overload, 429) count toward opening it from
every worker, and an open breaker (``CircuitOpenError``, naming the failure that opened it) ends
the retries at once. A malformed answer (``LLM_INVALID_RESPONSE``) is neither counted nor retried:
it is that request's error (the generation stage gives the model one repair turn).
:class:`FallbackLLM` tries route entries in order (primary -> secondary -> local): an open breaker
or a retriable error that survived the entry's retries moves to the next entry; non-retriable
errors (bad request, auth, context too long, content policy, malformed answer) and a passed
request deadline are raised at once (context too long is the generation stage's
simplified-context strategy, a malformed answer its repair turn).

Every wrapper also streams (``stream(request, sink)``, llm/streaming.py) through its inner
client with the same rules: each provider call is one attempt of the sink, so a retry or a
fallback streams as a further attempt whose text replaces the partial one.

A result served by any entry but the first is a :class:`RoutedResult` with ``degraded=True``;
use :func:`route_of` to read the route information from any ``LLMResult``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace

from agentstream.exceptions import AgentStreamError, ConfigError
from agentstream.llm.base import LLMClient, LLMRequest, LLMResult
from agentstream.llm.exceptions import LLMTimeoutError
from agentstream.llm.streaming import TokenSink, stream_or_complete
from agentstream.observability.logging import get_logger
from agentstream.resilience.breaker import CircuitBreaker
from agentstream.resilience.exceptions import CircuitOpenError, DeadlineExceededError
from agentstream.resilience.retry import RetryPolicy, retry_call

log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class RoutedResult(LLMResult):
    """An ``LLMResult`` that says which route entry answered."""

    route: str
    served_by: str
    degraded: bool = False
    skipped: tuple[str, ...] = field(default_factory=tuple)
    """``"<entry>: <error code>"`` for every entry tried before ``served_by``."""


def route_of(result: LLMResult) -> RoutedResult | None:
    return result if isinstance(result, RoutedResult) else None


def is_degraded(result: LLMResult) -> bool:
    return isinstance(result, RoutedResult) and result.degraded


class WrapperLLM:
    """Delegates everything to ``inner``; subclasses override what they change."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self.inner.complete(request)

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        return await stream_or_complete(self.inner, request, sink)

    async def health_check(self) -> bool:
        return await self.inner.health_check()

    async def aclose(self) -> None:
        await self.inner.aclose()


class TimeoutLLM(WrapperLLM):
    """A per-call timeout that raises ``LLMTimeoutError`` (retriable, counted by breakers)."""

    def __init__(self, inner: LLMClient, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ConfigError("an LLM call timeout must be > 0")
        super().__init__(inner)
        self.timeout_s = timeout_s

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self._timed(self.inner.complete(request))

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        return await self._timed(stream_or_complete(self.inner, request, sink))

    async def _timed(self, call: Awaitable[LLMResult]) -> LLMResult:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await call
        except TimeoutError as exc:
            raise LLMTimeoutError(
                f"{self.inner.name}: no answer within {self.timeout_s:g}s"
            ) from exc


class RetryingLLM(WrapperLLM):
    """Retries retriable errors under ``policy`` (backoff with full jitter, Retry-After, per-call
    timeout, total budget, request deadline from :func:`~agentstream.resilience.deadline_scope`).
    An attempt that hits ``policy.attempt_timeout_s`` counts as an ``LLMTimeoutError``."""

    def __init__(
        self, inner: LLMClient, policy: RetryPolicy, *, rng: random.Random | None = None
    ) -> None:
        super().__init__(inner)
        self.policy = policy
        self._rng = rng

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self._retried(lambda: self.inner.complete(request))

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        return await self._retried(lambda: stream_or_complete(self.inner, request, sink))

    async def _retried(self, call: Callable[[], Awaitable[LLMResult]]) -> LLMResult:
        name = self.inner.name
        return await retry_call(
            call,
            self.policy,
            timeout_error=lambda s: LLMTimeoutError(f"{name}: no answer within {s:.3g}s"),
            operation=f"llm {name}",
            rng=self._rng,
        )


class CircuitBreakerLLM(WrapperLLM):
    """Calls ``inner`` through a shared :class:`CircuitBreaker` (key: usually the provider name)."""

    def __init__(self, inner: LLMClient, breaker: CircuitBreaker) -> None:
        super().__init__(inner)
        self.breaker = breaker

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self.breaker.call(lambda: self.inner.complete(request))

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        return await self.breaker.call(lambda: stream_or_complete(self.inner, request, sink))


def falls_through(exc: AgentStreamError) -> bool:
    """Default fallback rule: open breakers and retriable errors move on; the rest do not."""
    if isinstance(exc, DeadlineExceededError):
        return False
    return isinstance(exc, CircuitOpenError) or exc.retriable


class FallbackLLM:
    """An ordered chain of clients; the first that answers wins (see the module docstring)."""

    def __init__(
        self,
        chain: Sequence[LLMClient],
        *,
        route: str = "default",
        falls_through: Callable[[AgentStreamError], bool] = falls_through,
        force_fallback: bool = False,
    ) -> None:
        if not chain:
            raise ConfigError(f"route {route!r} has no models")
        self.chain = tuple(chain)
        self.route = route
        self._falls_through = falls_through
        # Degradation switch: skip the primary and serve from the fallbacks (answers degraded).
        self.force_fallback = force_fallback

    @property
    def name(self) -> str:
        return self.route

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self._serve(lambda client: client.complete(request))

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        return await self._serve(lambda client: stream_or_complete(client, request, sink))

    async def _serve(self, call: Callable[[LLMClient], Awaitable[LLMResult]]) -> LLMResult:
        skipped: list[str] = []
        last = len(self.chain) - 1
        first = 1 if self.force_fallback and last > 0 else 0
        if first:
            skipped.append(f"{self.chain[0].name}: FORCED_FALLBACK")
        for index, client in enumerate(self.chain[first:], start=first):
            try:
                result = await call(client)
            except AgentStreamError as exc:
                if index == last or not self._falls_through(exc):
                    raise
                skipped.append(f"{client.name}: {exc.code}")
                log.warning(
                    "llm fallback",
                    route=self.route,
                    failed=client.name,
                    code=exc.code,
                    next=self.chain[index + 1].name,
                )
                continue
            return _routed(result, route=self.route, served_by=client.name, skipped=skipped)
        raise AssertionError("unreachable: the last entry either answers or raises")

    async def health_check(self) -> bool:
        for client in self.chain:
            if await client.health_check():
                return True
        return False

    async def aclose(self) -> None:
        for client in self.chain:
            await client.aclose()


def _routed(result: LLMResult, *, route: str, served_by: str, skipped: list[str]) -> RoutedResult:
    if isinstance(result, RoutedResult):  # a nested route: keep its verdict, add ours
        return replace(
            result,
            route=route,
            degraded=result.degraded or bool(skipped),
            skipped=(*skipped, *result.skipped),
        )
    return RoutedResult(
        content=result.content,
        tool_calls=result.tool_calls,
        usage=result.usage,
        model=result.model,
        finish_reason=result.finish_reason,
        route=route,
        served_by=served_by,
        degraded=bool(skipped),
        skipped=tuple(skipped),
    )
