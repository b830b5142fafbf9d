"""MCP server entries in the common ``mcpServers`` JSON format.

Server names become tool-name prefixes (``time`` -> ``time.get_current_time``) so they must be
1-64 letters, digits, ``_`` or ``-``: no dots, which keeps every namespaced name unique.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from agentstream.exceptions import ConfigError
from agentstream.observability.logging import get_logger
from agentstream.tools.settings import ToolSettings

log = get_logger(__name__)

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
Transport = Literal["stdio", "http"]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KNOWN_KEYS = frozenset(
    {
        "command",
        "args",
        "env",
        "cwd",
        "url",
        "headers",
        "type",
        "transport",
        "disabled",
        "timeout_s",
        "max_concurrency",
        "cache_ttl_s",
        "trust_annotations",
    }
)
_TRANSPORTS: dict[str, Transport] = {
    "stdio": "stdio",
    "http": "http",
    "streamable-http": "http",
    "streamable_http": "http",
    "streamableHttp": "http",
}


class McpServerConfig(BaseModel):
    """One server: stdio (``command``) or streamable HTTP (``url``)."""

    name: str
    transport: Transport
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    disabled: bool = False
    timeout_s: float | None = Field(default=None, gt=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    cache_ttl_s: int | None = Field(default=None, ge=0)
    trust_annotations: bool = True

    @property
    def target(self) -> str:
        """What to show for the server (never env or header values)."""
        if self.transport == "http":
            return self.url or ""
        return " ".join([self.command or "", *self.args]).strip()


def parse_mcp_servers(document: Any, *, source: str = "mcpServers") -> dict[str, McpServerConfig]:
    """Parse ``{"mcpServers": {...}}`` or the inner mapping; raises :class:`ConfigError`."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{source}: not valid JSON ({exc.msg})") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    servers = document.get("mcpServers", document)
    if not isinstance(servers, dict):
        raise ConfigError(f"{source}: 'mcpServers' must be an object")
    return {name: _parse_entry(name, entry, source) for name, entry in servers.items()}


def _parse_entry(name: str, entry: Any, source: str) -> McpServerConfig:
    where = f"{source}: server {name!r}"
    if not SERVER_NAME.match(name):
        raise ConfigError(f"{where}: names are 1-64 letters, digits, '_' or '-' (no dots)")
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = sorted(set(entry) - _KNOWN_KEYS)
    if unknown:
        log.warning("ignoring unknown MCP server keys", server=name, keys=",".join(unknown))
    declared = entry.get("type", entry.get("transport"))
    transport: Transport
    if declared is None:
        transport = "http" if "url" in entry else "stdio"
    elif declared in _TRANSPORTS:
        transport = _TRANSPORTS[declared]
    else:
        raise ConfigError(f"{where}: transport {declared!r} is not supported (stdio or http)")
    if transport == "stdio" and not entry.get("command"):
        raise ConfigError(f"{where}: a stdio server needs 'command'")
    if transport == "http" and not entry.get("url"):
        raise ConfigError(f"{where}: an HTTP server needs 'url'")
    fields = {k: v for k, v in entry.items() if k in _KNOWN_KEYS - {"type", "transport"}}
    try:
        config = McpServerConfig(name=name, transport=transport, **fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from exc
    return config


def load_mcp_servers(settings: ToolSettings) -> list[McpServerConfig]:
    """The enabled servers from ``mcp_servers_file`` and inline ``mcp_servers`` (inline wins)."""
    servers: dict[str, McpServerConfig] = {}
    path = settings.mcp_servers_file
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read MCP servers file {path}: {exc.strerror}") from exc
        servers.update(parse_mcp_servers(text, source=str(path)))
    if settings.mcp_servers:
        servers.update(parse_mcp_servers(settings.mcp_servers, source="tools.mcp_servers"))
    return [s for s in servers.values() if not s.disabled]


def expand_env(values: dict[str, str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Replace ``${VAR}`` references with the environment's values (missing -> empty)."""
    env = os.environ if environ is None else environ
    return {k: _ENV_REF.sub(lambda m: env.get(m.group(1), ""), v) for k, v in values.items()}
