"""``PolicyExecutor``: permissions, the result cache and metrics around any ``ToolExecutor``.

The order of checks for one call, each outcome documented with its ``error_code``:

1. permissions (global, tenant and user globs, and the request's ``allowed_tools``): a call that
   is not permitted returns ``TOOL_ACCESS_DENIED`` ("tool access denied: <name>") and never
   reaches the tool or its server; the tool stage turns that code into an ErrorEvent. Checked
   before the name is looked up, so a caller cannot probe which tools exist;
2. an unknown name returns ``TOOL_NOT_FOUND`` (from the inner registry);
3. read-only tools configured cacheable (a cache TTL > 0: opt-in per tool, none by default): a
   cached result for (tenant, tool, arguments) is returned without calling the tool, unless the
   request asked for ``cache=bypass`` (request metadata; ``agentstream send --no-cache``);
4. the inner executor validates the arguments against the tool's schema (``TOOL_INVALID_ARGUMENTS``
   before any call), runs it with its timeout and turns failures into outcomes; a successful
   read-only result is cached (a bypassing request refreshes the entry).

It also owns the lifecycle of the MCP sessions (``start``/``stop``) and reports health.
Logs carry tool names, codes and durations only.
"""

from __future__ import annotations

import time
from typing import Any

from agentstream.exceptions import ErrorCode
from agentstream.llm.base import ToolSpec
from agentstream.observability.logging import get_logger
from agentstream.resilience.breaker import BreakerRegistry
from agentstream.resilience.exceptions import CircuitOpenError
from agentstream.tools.base import (
    BreakerScoped,
    CallContext,
    ToolExecutor,
    ToolOutcome,
    ToolPolicy,
)
from agentstream.tools.cache import ToolResultCache
from agentstream.tools.health import ToolMetrics
from agentstream.tools.mcp.toolset import McpToolset
from agentstream.tools.permissions import ToolPermissions
from agentstream.tools.registry import ERROR_PREFIX

log = get_logger(__name__)

UNKNOWN_TOOL_METRIC = "(unknown)"
DEFAULT_CACHE_TTL_S = 0  # opt-in: only tools with a TTL of their own are cached


# Outcomes that count against a tool server's breaker (bad arguments or a tool's own error do not).
_SERVER_FAILURES = frozenset({ErrorCode.TOOL_UNAVAILABLE, ErrorCode.TOOL_TIMEOUT})


class PolicyExecutor:
    """A :class:`ToolExecutor` that checks permissions and caches around ``inner``."""

    def __init__(
        self,
        inner: ToolExecutor,
        *,
        permissions: ToolPermissions | None = None,
        cache: ToolResultCache | None = None,
        default_cache_ttl_s: int = DEFAULT_CACHE_TTL_S,
        toolset: McpToolset | None = None,
        breakers: BreakerRegistry | None = None,
    ) -> None:
        self.inner = inner
        self.breakers = breakers
        self.permissions = permissions or ToolPermissions()
        self.cache = cache
        self.default_cache_ttl_s = default_cache_ttl_s
        self.toolset = toolset
        self.metrics = ToolMetrics()
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.toolset is not None:
            await self.toolset.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.toolset is not None:
            await self.toolset.stop()

    # --- ToolExecutor ---------------------------------------------------------------------------

    def specs(
        self, allowed: list[str] | None = None, *, call: CallContext | None = None
    ) -> list[ToolSpec]:
        """Only tools this caller may use are offered: a denied tool is not in the prompt."""
        specs = self.inner.specs(allowed)
        if call is None:
            return specs
        return [spec for spec in specs if self.permissions.permits(spec.name, call)]

    def has(self, name: str) -> bool:
        return self.inner.has(name)

    def read_only(self, name: str) -> bool:
        return self.inner.policy(name).read_only

    def policy(self, name: str) -> ToolPolicy:
        return self.inner.policy(name)

    def cache_ttl_s(self, name: str) -> int:
        """Seconds a result of ``name`` is cached; 0 for tools that are not read-only, and for
        read-only tools without a TTL of their own (unless ``tools.cache_ttl_s`` sets one)."""
        return self.inner.policy(name).result_ttl_s(self.default_cache_ttl_s)

    async def execute(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float,
        call: CallContext | None = None,
    ) -> ToolOutcome:
        started = time.perf_counter()
        metric = name if self.inner.has(name) else UNKNOWN_TOOL_METRIC
        if not self.permissions.permits(name, call):
            log.info("tool call denied", tool=name[:64])
            outcome = ToolOutcome(
                content=f"{ERROR_PREFIX}tool access denied: {name[:128]}",
                is_error=True,
                error_code=ErrorCode.TOOL_ACCESS_DENIED,
                duration_ms=_elapsed_ms(started),
            )
            self._record(metric, outcome)
            return outcome
        ttl = self.cache_ttl_s(name) if self.cache is not None and call is not None else 0
        if ttl > 0 and self.cache is not None and call is not None and not call.bypass_cache:
            cached = await self.cache.get(call.tenant_id, name, arguments)
            if cached is not None:
                outcome = ToolOutcome(content=cached, duration_ms=_elapsed_ms(started))
                self._record(metric, outcome, cache_hit=True)
                return outcome
        outcome = await self._guarded(name, arguments, timeout_s=timeout_s, call=call)
        if ttl > 0 and self.cache is not None and call is not None and not outcome.is_error:
            await self.cache.put(call.tenant_id, name, arguments, outcome.content, ttl)
        self._record(metric, outcome)
        return outcome

    async def _guarded(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float, call: CallContext | None
    ) -> ToolOutcome:
        """Calls to an MCP server go through that server's circuit breaker, a Python tool's
        through its own (state shared by all workers in Redis): a server or tool that keeps
        failing or timing out is not called at all while the breaker is open, and its calls
        fail fast as ``TOOL_UNAVAILABLE``."""
        server = self._breaker_scope(name)
        if server is None or self.breakers is None:
            return await self.inner.execute(name, arguments, timeout_s=timeout_s, call=call)
        breaker = self.breakers.get(f"tools:{server}")
        try:
            permit = await breaker.acquire()
        except CircuitOpenError:
            return ToolOutcome(
                content=f"{ERROR_PREFIX}tool server {server!r} is unavailable (circuit open)",
                is_error=True,
                error_code=ErrorCode.TOOL_UNAVAILABLE,
            )
        outcome = await self.inner.execute(name, arguments, timeout_s=timeout_s, call=call)
        failed = outcome.error_code in _SERVER_FAILURES
        await breaker.record(permit, "failure" if failed else "success")
        return outcome

    def _breaker_scope(self, name: str) -> str | None:
        if not self.inner.has(name):
            return None
        if isinstance(self.inner, BreakerScoped):
            return self.inner.breaker_scope(name)
        return name.split(".", 1)[0] if "." in name else None

    # --- health ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Servers (connected, tool count, last error, p95 latency) and per-tool metrics."""
        servers = [h.snapshot() for h in self.toolset.health()] if self.toolset else []
        return {"servers": servers, "tools": self.metrics.snapshot()}

    def _record(self, metric: str, outcome: ToolOutcome, *, cache_hit: bool = False) -> None:
        self.metrics.record(
            metric,
            error_code=outcome.error_code if outcome.is_error else None,
            duration_ms=outcome.duration_ms,
            cache_hit=cache_hit,
        )


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
