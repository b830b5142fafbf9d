"""Build the worker's tool executor from settings.

Built-in tools (``calculator``, ``current_time``), Python tools (``tools.python_modules`` and the
``agentstream.tools`` entry points) and the configured MCP servers' tools share one
:class:`ToolRegistry` (registered in that order; the first of two equal names wins for MCP, and a
Python tool may not take a built-in's name); a :class:`PolicyExecutor` adds permissions, the
Redis result cache (when a Redis client is given) and metrics, and opens the MCP sessions on
``start``. Each Python tool has a circuit breaker of its own (``python:<name>``).
"""

from __future__ import annotations

from typing import Any

from agentstream.config import Settings
from agentstream.exceptions import ConfigError
from agentstream.resilience.breaker import BreakerConfig, BreakerRegistry
from agentstream.state.redis import RedisClient
from agentstream.tools.builtin import builtin_tools
from agentstream.tools.cache import ToolResultCache
from agentstream.tools.exceptions import ToolError
from agentstream.tools.executor import PolicyExecutor
from agentstream.tools.mcp.config import load_mcp_servers
from agentstream.tools.mcp.toolset import McpToolset
from agentstream.tools.permissions import ToolPermissions
from agentstream.tools.policy import ToolOverrides
from agentstream.tools.python.function import PythonTool
from agentstream.tools.python.loader import load_python_tools
from agentstream.tools.registry import ToolRegistry


def register_python_tools(registry: ToolRegistry, tools: list[PythonTool[..., Any]]) -> None:
    """Add Python tools with their own policy, timeout and breaker; a name already taken (a
    built-in's) is a :class:`ConfigError`."""
    for tool in tools:
        try:
            registry.register(
                tool,
                policy=tool.policy,
                timeout_s=tool.timeout_s,
                breaker=f"python:{tool.name}",
            )
        except ToolError as exc:
            raise ConfigError(
                f"tools.python_modules: Python tool {tool.name!r} "
                f"({tool.function.__module__}) cannot be registered: {exc}"
            ) from exc


def build_tools(settings: Settings, *, redis: RedisClient | None = None) -> PolicyExecutor:
    """The tool executor for ``settings`` (not started: call ``await executor.start()``).

    Raises :class:`~agentstream.exceptions.ConfigError` for an invalid ``mcpServers`` config
    and for Python tools that cannot be loaded or registered.
    """
    ts = settings.tools
    registry = ToolRegistry(builtin_tools(), overrides=ToolOverrides(ts.overrides))
    register_python_tools(registry, load_python_tools(ts))
    servers = load_mcp_servers(ts)
    toolset = (
        McpToolset(servers, registry, settings=ts, log_dir=settings.run_dir / "mcp")
        if servers
        else None
    )
    return PolicyExecutor(
        registry,
        permissions=ToolPermissions.from_settings(ts),
        cache=ToolResultCache(redis, settings.state.key_prefix) if redis is not None else None,
        default_cache_ttl_s=ts.cache_ttl_s,
        toolset=toolset,
        breakers=(
            BreakerRegistry(
                redis, BreakerConfig.from_settings(settings), namespace=settings.state.key_prefix
            )
            if redis is not None and settings.llm.breaker.enabled
            else None
        ),
    )
