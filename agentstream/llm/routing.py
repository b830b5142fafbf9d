"""Named model routes, one chosen per request.

A route is a name for a fallback chain (``"main": primary -> secondary -> local``). The route for a
request is, first match wins:

1. the request metadata's ``model`` entry, if it names a configured route and request routing is
   allowed (an unknown name is ignored with a warning, it does not fail the request);
2. the serving agent's route (its definition's ``model``; checked against the routes at start-up);
3. the tenant's route from ``tenant_routes``;
4. the default route.

:meth:`ModelRouter.select` takes the tenant explicitly (the generation stage knows it);
:meth:`ModelRouter.complete` alone sees only the request metadata.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence

from agentstream.exceptions import ConfigError
from agentstream.llm.base import LLMClient, LLMRequest, LLMResult
from agentstream.llm.streaming import TokenSink, stream_or_complete
from agentstream.observability.logging import get_logger

log = get_logger(__name__)

ROUTE_METADATA_KEY = "model"


class ModelRouter:
    """An ``LLMClient`` over named routes (each usually a :class:`FallbackLLM`)."""

    def __init__(
        self,
        routes: Mapping[str, LLMClient],
        *,
        default: str,
        tenant_routes: Mapping[str, str] | None = None,
        request_routes: bool = True,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        if default not in routes:
            raise ConfigError(f"default route {default!r} is not configured")
        unknown = {t: r for t, r in (tenant_routes or {}).items() if r not in routes}
        if unknown:
            raise ConfigError(f"tenant_routes name unknown routes: {unknown}")
        self.routes = dict(routes)
        self.default = default
        self.tenant_routes = dict(tenant_routes or {})
        self.request_routes = request_routes
        self._closers = tuple(closers)

    @property
    def name(self) -> str:
        return self.default

    def route_name(
        self,
        *,
        tenant_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        agent_route: str | None = None,
    ) -> str:
        wanted = (metadata or {}).get(ROUTE_METADATA_KEY)
        if wanted and self.request_routes:
            if wanted in self.routes:
                return wanted
            # the requested value is client input: not logged (it could carry anything)
            log.warning("unknown model route requested; using the default", default=self.default)
        if agent_route is not None and agent_route in self.routes:
            return agent_route
        if tenant_id is not None and tenant_id in self.tenant_routes:
            return self.tenant_routes[tenant_id]
        return self.default

    def select(
        self,
        *,
        tenant_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        agent_route: str | None = None,
    ) -> LLMClient:
        """The route client for a request of ``tenant_id`` carrying ``metadata``, served by an
        agent whose definition names ``agent_route``."""
        name = self.route_name(tenant_id=tenant_id, metadata=metadata, agent_route=agent_route)
        return self.routes[name]

    async def complete(self, request: LLMRequest) -> LLMResult:
        return await self.select(metadata=request.metadata).complete(request)

    async def stream(self, request: LLMRequest, sink: TokenSink) -> LLMResult:
        return await stream_or_complete(self.select(metadata=request.metadata), request, sink)

    async def health_check(self) -> bool:
        return await self.routes[self.default].health_check()

    async def aclose(self) -> None:
        """Closes what the builder registered (each provider once, then owned connections)."""
        for close in self._closers:
            await close()
