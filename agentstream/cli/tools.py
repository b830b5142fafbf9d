"""``agentstream tools list``: servers, tools, health and policies as this machine sees them.

It connects to every configured MCP server the way a worker does (so it also checks the config
and reachability), prints, and disconnects. Env and header values are never shown.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstream.cli.runtime import console, load_cli_settings

if TYPE_CHECKING:
    from rich.table import Table

    from agentstream.config import Settings

tools_app = typer.Typer(
    help="Inspect the tools workers offer (built-in, Python and MCP).", no_args_is_help=True
)


async def collect_tools(settings: Settings) -> dict[str, Any]:
    """``{"servers": [...], "tools": [...]}`` after connecting to the configured servers."""
    from agentstream.tools.factory import build_tools
    from agentstream.tools.mcp.tool import McpTool
    from agentstream.tools.python.function import PythonTool
    from agentstream.tools.registry import ToolRegistry

    executor = build_tools(settings)
    await executor.start()
    try:
        registry = executor.inner
        assert isinstance(registry, ToolRegistry)
        servers = []
        for health in executor.toolset.health() if executor.toolset else []:
            connection = executor.toolset.connections[health.name] if executor.toolset else None
            servers.append(
                {**health.snapshot(), "target": connection.config.target if connection else ""}
            )
        default_timeout = settings.timeouts.tool_call_s
        tools = []
        for name in registry.names():
            tool = registry.get(name)
            policy = registry.policy(name)
            tools.append(
                {
                    "name": name,
                    "server": _source(tool, McpTool, PythonTool),
                    "read_only": policy.read_only,
                    "idempotent": policy.idempotent,
                    "accepts_idempotency_key": policy.accepts_idempotency_key,
                    "destructive": policy.destructive,
                    "timeout_s": registry.timeout_for(name, default_timeout),
                    "cache_ttl_s": executor.cache_ttl_s(name),
                    "permitted": executor.permissions.permits(name, None),
                    "description": tool.spec.description,
                }
            )
        return {"servers": servers, "tools": tools}
    finally:
        await executor.stop()


def _source(tool: Any, mcp_tool: type[Any], python_tool: type[Any]) -> str:
    """Where a tool comes from: its MCP server's name, ``python`` or ``builtin``."""
    if isinstance(tool, mcp_tool):
        return str(tool.server)
    return "python" if isinstance(tool, python_tool) else "builtin"


def _yes(flag: bool) -> str:
    return "yes" if flag else "-"


def servers_table(servers: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="MCP servers")
    table.add_column("server", no_wrap=True)
    for column in ("transport", "target", "connected", "tools", "p95 ms", "last error"):
        table.add_column(column, overflow="fold")
    for s in servers:
        p95 = s["p95_latency_ms"]
        table.add_row(
            s["name"],
            s["transport"],
            s["target"],
            "yes" if s["connected"] else "[red]no[/red]",
            str(s["tool_count"]),
            "-" if p95 is None else f"{p95:.1f}",
            s["last_error"] or "-",
        )
    return table


def tools_table(tools: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(title="Tools (descriptions: --json)")
    table.add_column("tool", no_wrap=True)
    for column in ("server", "r/o", "idem", "key", "timeout", "cache", "access"):
        table.add_column(column)
    for t in tools:
        table.add_row(
            t["name"],
            t["server"],
            _yes(t["read_only"]),
            _yes(t["idempotent"]),
            _yes(t["accepts_idempotency_key"]),
            f"{t['timeout_s']:g}",
            str(t["cache_ttl_s"]) if t["cache_ttl_s"] else "-",
            "allowed" if t["permitted"] else "denied",
        )
    return table


@tools_app.command("list")
def list_tools(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Connect to the configured MCP servers and show servers, tools, health and policies."""
    settings = load_cli_settings()
    report = asyncio.run(collect_tools(settings))  # failures: one line (cli/errors.py)
    if as_json:
        console.print(json.dumps(report), markup=False)
        return
    if report["servers"]:
        console.print(servers_table(report["servers"]))
    else:
        console.print("no MCP servers configured (tools.mcp_servers / tools.mcp_servers_file)")
    console.print(tools_table(report["tools"]))
    console.print(
        "access: the global allow/deny rules; tenants, users and each request's allowed_tools "
        "narrow it further",
        style="dim",
    )
