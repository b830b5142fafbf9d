"""Build the worker's tool executor from settings.

Built-in tools (``calculator``, ``current_time``) and the configured MCP servers' tools share one
:class:`ToolRegistry`; a :class:`PolicyExecutor` adds permissions, the Redis result cache (when a
Redis client is given) and metrics, and opens the MCP sessions on ``start``.
"""

from __future__ import annotations

from agentstream.config import Settings
from agentstream.resilience.breaker import BreakerConfig, BreakerRegistry
from agentstream.state.redis import RedisClient
from agentstream.tools.builtin import builtin_tools
from agentstream.tools.cache import ToolResultCache
from agentstream.tools.executor import PolicyExecutor
from agentstream.tools.mcp.config import load_mcp_servers
from agentstream.tools.mcp.toolset import McpToolset
from agentstream.tools.permissions import ToolPermissions
from agentstream.tools.policy import ToolOverrides
from agentstream.tools.registry import ToolRegistry


def build_tools(settings: Settings, *, redis: RedisClient | None = None) -> PolicyExecutor:
    """The tool executor for ``settings`` (not started: call ``await executor.start()``).

    Raises :class:`~agentstream.exceptions.ConfigError` for an invalid ``mcpServers`` config.
    """
    ts = settings.tools
    registry = ToolRegistry(builtin_tools(), overrides=ToolOverrides(ts.overrides))
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
