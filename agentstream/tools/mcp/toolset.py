"""The configured MCP servers' tools, kept in a :class:`ToolRegistry` as the servers come and go.

Naming and duplicates: a server's tool ``t`` is registered as ``<server>.<t>``. Server names have
no dots and built-in tools have no dots, so names from different servers never collide and never
shadow a built-in. Should a name still be taken (a server listing the same tool twice, or an
application tool registered under a dotted name), the first registration wins and the later one
is skipped with a warning. Tools keep their registration while their server reconnects (calls fail
with ``TOOL_UNAVAILABLE`` meanwhile); a tool the server no longer lists is removed.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from pathlib import Path

import mcp_types

from agentstream.llm.base import ToolSpec
from agentstream.observability.logging import get_logger
from agentstream.tools.exceptions import ToolError
from agentstream.tools.health import ServerHealth
from agentstream.tools.mcp.config import McpServerConfig
from agentstream.tools.mcp.connection import McpConnection
from agentstream.tools.mcp.tool import McpTool
from agentstream.tools.policy import policy_from_annotations
from agentstream.tools.registry import ToolRegistry
from agentstream.tools.settings import ToolSettings

log = get_logger(__name__)

REMOTE_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class McpToolset:
    """Connections to the configured servers, and their tools in ``registry``."""

    def __init__(
        self,
        servers: list[McpServerConfig],
        registry: ToolRegistry,
        *,
        settings: ToolSettings,
        log_dir: Path | None = None,
    ) -> None:
        self.registry = registry
        self._settings = settings
        self.connections = {
            s.name: McpConnection(s, settings=settings, on_tools=self._update, log_dir=log_dir)
            for s in servers
        }
        self._names: dict[str, set[str]] = {}
        self._listing: dict[str, str] = {}

    async def start(self) -> None:
        """Connect to every server, waiting up to ``connect_timeout_s`` for the first attempts.

        A server that cannot be reached does not stop the worker: it keeps retrying in the
        background and its tools appear when it connects.
        """
        for connection in self.connections.values():
            connection.start()
        wait = self._settings.connect_timeout_s + 1.0
        await asyncio.gather(*(c.wait_attempted(wait) for c in self.connections.values()))
        for name, connection in self.connections.items():
            if not connection.connected:
                log.warning("mcp server not connected at start", server=name)

    async def stop(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.connections.values()))

    def health(self) -> list[ServerHealth]:
        return [c.health for c in self.connections.values()]

    def tools_of(self, server: str) -> list[str]:
        return sorted(self._names.get(server, ()))

    def _update(self, connection: McpConnection, tools: list[mcp_types.Tool]) -> None:
        """Register a server's current listing (called on connect and on each health check)."""
        server = connection.config
        listing = json.dumps(
            [t.model_dump(mode="json", by_alias=True) for t in tools], sort_keys=True
        )
        if self._listing.get(server.name) == listing:
            return
        self._listing[server.name] = listing
        current: set[str] = set()
        for tool in tools:
            name = f"{server.name}.{tool.name}"
            if not REMOTE_TOOL_NAME.match(tool.name):
                log.warning("skipping mcp tool with an unusable name", server=server.name)
                continue
            if name in current:
                log.warning("skipping duplicate mcp tool", tool=name)
                continue
            if self.registry.has(name) and not _is_from(self.registry, name, server.name):
                log.warning("mcp tool name already taken; skipped", tool=name)
                continue
            policy = policy_from_annotations(
                tool.annotations, tool.meta, trusted=server.trust_annotations
            )
            if server.cache_ttl_s is not None:
                policy = replace(policy, cache_ttl_s=server.cache_ttl_s)
            spec = ToolSpec(
                name=name,
                description=tool.description or tool.title or "",
                input_schema=tool.input_schema,
            )
            mcp_tool = McpTool(
                connection=connection, remote_name=tool.name, spec=spec, policy=policy
            )
            try:
                self.registry.register(
                    mcp_tool, replace=True, policy=policy, timeout_s=server.timeout_s
                )
            except ToolError as exc:
                log.warning("skipping mcp tool", tool=name, error=str(exc)[:200])
                continue
            current.add(name)
        for gone in self._names.get(server.name, set()) - current:
            self.registry.unregister(gone)
        self._names[server.name] = current
        connection.health.tool_count = len(current)
        log.info("mcp tools registered", server=server.name, tools=len(current))


def _is_from(registry: ToolRegistry, name: str, server: str) -> bool:
    tool = registry.get(name)
    return isinstance(tool, McpTool) and tool.server == server
