"""Tool settings: the ``tools`` group of :class:`agentstream.config.Settings`.

MCP servers use the common ``mcpServers`` JSON format, from a file (``mcp_servers_file``) and/or
inline (``mcp_servers``, e.g. ``AGENTSTREAM_TOOLS__MCP_SERVERS='{"mcpServers": {...}}'``); an
inline server replaces a file server of the same name. Per server entry::

    {"command": "...", "args": [...], "env": {...}, "cwd": "..."}        stdio
    {"url": "http://host:port/mcp", "headers": {...}}                     streamable HTTP
    optional: "type" ("stdio" | "http" | "streamable-http"), "disabled", and agentstream's
    "timeout_s", "max_concurrency", "cache_ttl_s", "trust_annotations"

``${VAR}`` in ``env`` and ``headers`` values is replaced from the worker's environment.

Access (glob patterns over namespaced tool names, ``fnmatch`` rules, case-sensitive; ``*``
matches dots too): a call is allowed when every level that is configured allows it and none
denies it: the global ``allow``/``deny``, then ``tenants[tenant]``, then
``tenants[tenant].users[user]``; the result is intersected with the request's ``allowed_tools``.

``overrides`` maps a tool name or glob to policy/timeout/cache settings; an exact name beats a
glob, and a longer glob beats a shorter one, field by field. Tool results are cached only for
read-only tools configured cacheable (``cache_ttl_s`` > 0); by default nothing is cached.

``python_modules`` names modules with ``@agentstream.tool`` functions (see
:mod:`agentstream.tools.python`).

This module imports nothing from the rest of the project (``config`` imports it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer

MASK = "**********"


class ToolAccessRule(BaseModel):
    """Allow/deny globs for one level (everyone, a tenant or a user)."""

    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)


class TenantToolAccess(ToolAccessRule):
    """A tenant's rule, and its users' rules (keyed by user_id)."""

    users: dict[str, ToolAccessRule] = Field(default_factory=dict)


class ToolOverride(BaseModel):
    """Operator overrides for tools matching a name or glob. ``None`` keeps the tool's value."""

    read_only: bool | None = None
    idempotent: bool | None = None
    accepts_idempotency_key: bool | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    cache_ttl_s: int | None = Field(default=None, ge=0)  # 0: never cache


class ApprovalRule(BaseModel):
    """Which calls wait for a person's approval (docs/approvals.md). ``tools``: globs over
    namespaced tool names; ``tenants`` / ``agents``: ids or globs (empty = every one; the
    default agent is ``default``). Of the rules that match a call, the last one decides."""

    tools: list[str] = Field(min_length=1)
    tenants: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    approval: Literal["required", "none"] = "required"


class ToolSettings(BaseModel):
    """Tools: MCP servers, access rules, overrides, cache and connection behaviour."""

    mcp_servers_file: Path | None = None
    mcp_servers: dict[str, Any] = Field(default_factory=dict)
    allow: list[str] = Field(default_factory=lambda: ["*"])
    deny: list[str] = Field(default_factory=list)
    tenants: dict[str, TenantToolAccess] = Field(default_factory=dict)
    overrides: dict[str, ToolOverride] = Field(default_factory=dict)
    # Human approval: rules (last match wins), how long a parked call waits for a decision
    # before it is denied, and how often workers look for parked calls past that time.
    approvals: list[ApprovalRule] = Field(default_factory=list)
    approval_timeout_s: float = Field(default=600.0, gt=0)
    approval_sweep_interval_s: float = Field(default=1.0, gt=0)
    # Delegation (``agent.<name>`` tools): how long a parent waits for its child's answer
    # (never past the request's deadline); the same sweep ends the wait with an error result.
    delegation_timeout_s: float = Field(default=600.0, gt=0)
    # Python tools (tools/python/loader.py): modules ("pkg.mod") or objects ("pkg.mod:name"),
    # and whether installed packages' "agentstream.tools" entry points are loaded too.
    python_modules: list[str] = Field(default_factory=list)
    python_entry_points: bool = True
    # Result cache: opt-in per tool. Only read-only tools with a TTL of their own are cached
    # (overrides' cache_ttl_s, a server entry's cache_ttl_s, a Python tool's cache_ttl_s=, or
    # the MCP tool's _meta "io.agentstream/cache-ttl-s"). This is the TTL of read-only tools
    # that have none: 0 (the default) = not cached. Read-only is not the same as stable.
    cache_ttl_s: int = Field(default=0, ge=0)
    max_concurrency_per_server: int = Field(default=8, ge=1)
    connect_timeout_s: float = Field(default=30.0, gt=0)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    # How often a connected server is asked for its tool list (liveness and tool changes).
    health_check_interval_s: float = Field(default=30.0, gt=0)
    stop_timeout_s: float = Field(default=5.0, gt=0)

    @field_serializer("mcp_servers", when_used="json")
    def _mask_server_secrets(self, servers: dict[str, Any]) -> dict[str, Any]:
        """Dumps (``safe_dump``, ``agentstream config``) never show env or header values."""
        return mask_server_secrets(servers)


def mask_server_secrets(servers: dict[str, Any]) -> dict[str, Any]:
    inner = servers.get("mcpServers", servers)
    if not isinstance(inner, dict):
        return servers
    masked: dict[str, Any] = {}
    for name, entry in inner.items():
        if isinstance(entry, dict):
            entry = dict(entry)
            for key in ("env", "headers"):
                if isinstance(entry.get(key), dict):
                    entry[key] = dict.fromkeys(entry[key], MASK)
        masked[name] = entry
    return {"mcpServers": masked} if "mcpServers" in servers else masked
