"""The tool interface the tool-execution stage calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from agentstream.llm.base import ToolSpec


@dataclass(frozen=True, kw_only=True)
class ToolOutcome:
    """The result of one call: ``content`` is what the model sees; ``is_error`` marks failures."""

    content: str
    is_error: bool = False
    error_code: str | None = None
    duration_ms: float = 0.0

    def to_json(self) -> str:
        """Serialized for the step journal."""
        return json.dumps([self.content, self.is_error, self.error_code, self.duration_ms])

    @classmethod
    def from_json(cls, raw: str) -> ToolOutcome:
        content, is_error, error_code, duration_ms = json.loads(raw)
        return cls(
            content=content, is_error=is_error, error_code=error_code, duration_ms=duration_ms
        )


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """Who is calling, for permission checks, caching and idempotency.

    ``idempotency_key`` is stable across redeliveries of the same call (request_id, turn and
    call index); side-effecting tools that accept a key should pass it on.
    """

    tenant_id: str
    user_id: str
    request_id: str
    session_id: str
    request_allowed: tuple[str, ...] = ()
    idempotency_key: str = ""
    bypass_cache: bool = False


IDEMPOTENCY_META_KEY = "io.agentstream/idempotency-key"
"""Where an MCP call carries the idempotency key (request ``_meta``)."""


@dataclass(frozen=True, kw_only=True)
class ToolPolicy:
    """How a tool may be repeated and cached. The defaults are the safe answer for an unknown tool.

    ``read_only``: no side effects (safe to re-run; its results may be cached for
    ``cache_ttl_s`` seconds, ``None`` meaning the configured default, ``0`` never).
    ``idempotent``: repeating a call with the same arguments has no further effect.
    ``accepts_idempotency_key``: the tool takes ``CallContext.idempotency_key`` and applies a
    side effect at most once per key. ``destructive``: may delete or overwrite (display only).
    """

    read_only: bool = False
    idempotent: bool = False
    accepts_idempotency_key: bool = False
    destructive: bool = False
    cache_ttl_s: int | None = None

    def result_ttl_s(self, default_s: int) -> int:
        """Seconds a result may be reused (``default_s``: ``tools.cache_ttl_s``, for read-only
        tools without a TTL of their own); 0 = not cacheable, always so when not read-only."""
        if not self.read_only:
            return 0
        return default_s if self.cache_ttl_s is None else self.cache_ttl_s


@runtime_checkable
class Tool(Protocol):
    """One callable tool. ``read_only`` tools have no side effects (safe to re-run and cache)."""

    @property
    def spec(self) -> ToolSpec: ...

    @property
    def read_only(self) -> bool: ...

    async def call(self, arguments: dict[str, Any]) -> str: ...


@runtime_checkable
class KeyedTool(Protocol):
    """A tool that can be handed the call's idempotency key (the registry passes it when the
    tool's policy says ``accepts_idempotency_key``)."""

    async def call_with_key(
        self, arguments: dict[str, Any], idempotency_key: str | None
    ) -> str: ...


@runtime_checkable
class BreakerScoped(Protocol):
    """An executor that says which circuit breaker guards a tool (an MCP server's, a Python
    tool's own), or ``None`` for tools that have none (built-in)."""

    def breaker_scope(self, name: str) -> str | None: ...


@runtime_checkable
class ToolExecutor(Protocol):
    """Runs tools by name; ``execute`` returns an error outcome instead of raising."""

    def specs(
        self, allowed: list[str] | None = None, *, call: CallContext | None = None
    ) -> list[ToolSpec]:
        """Tools to offer the model: those in ``allowed`` (None = all) that ``call`` may use."""
        ...

    def has(self, name: str) -> bool: ...

    def read_only(self, name: str) -> bool: ...

    def policy(self, name: str) -> ToolPolicy: ...

    async def execute(
        self,
        name: str,
        arguments: dict[str, Any],
        *,
        timeout_s: float,
        call: CallContext | None = None,
    ) -> ToolOutcome: ...


@runtime_checkable
class ManagedTools(Protocol):
    """An executor with connections to open and close (MCP sessions); ``start`` is idempotent."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
