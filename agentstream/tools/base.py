"""The tool interface the tool-execution stage calls."""

from __future__ import annotations

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


@runtime_checkable
class Tool(Protocol):
    """One callable tool. ``read_only`` tools have no side effects (safe to re-run and cache)."""

    @property
    def spec(self) -> ToolSpec: ...

    @property
    def read_only(self) -> bool: ...

    async def call(self, arguments: dict[str, Any]) -> str: ...


@runtime_checkable
class ToolExecutor(Protocol):
    """Runs tools by name. ``execute`` never raises for tool failures: it returns an error outcome."""

    def specs(self, allowed: list[str] | None = None) -> list[ToolSpec]: ...

    def has(self, name: str) -> bool: ...

    async def execute(self, name: str, arguments: dict[str, Any], *, timeout_s: float) -> ToolOutcome: ...
