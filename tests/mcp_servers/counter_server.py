"""A project-owned MCP test server over streamable HTTP (run as a subprocess by the tests).

Tools: ``add(a, b)`` (read-only, cacheable for 120 s by its ``_meta``), ``calculator(expression)``
(read-only, ``"<int> <op> <int>"``, so the local rule model can pick it), ``slow(seconds)``
(read-only, sleeps), ``fail()`` (always an error result), ``bump()`` (side effect: increments a
counter; honours an idempotency key in ``_meta``, and says so in its ``_meta``) and ``stats()``,
which returns how many ``tools/call`` requests reached this process per tool name, counted
*before* the server validates arguments or looks the tool up, and the most ``slow`` calls that
ran at once. ``stats`` does not count
itself, so a test can read the counter without changing it.

    python tests/mcp_servers/counter_server.py --port 8123     (or --stdio)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from collections import Counter
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

IDEMPOTENCY_META_KEY = "io.agentstream/idempotency-key"
ACCEPTS_KEY_META = "io.agentstream/accepts-idempotency-key"
CACHE_TTL_META = "io.agentstream/cache-ttl-s"
ADD_CACHE_TTL_S = 120
STATS_TOOL = "stats"

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, destructive_hint=False)
SIDE_EFFECT = ToolAnnotations(read_only_hint=False, idempotent_hint=False, destructive_hint=False)


def create_server() -> MCPServer:
    calls: Counter[str] = Counter()
    bumps = {"count": 0}
    slow_calls = {"running": 0, "max": 0}
    seen_keys: set[str] = set()
    server = MCPServer("counter", version="1.0", subscriptions=False)

    async def count_calls(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "tools/call" and ctx.params is not None:
            name = ctx.params.get("name")
            if isinstance(name, str) and name != STATS_TOOL:
                calls[name] += 1
        return await call_next(ctx)

    server.middleware.append(count_calls)

    @server.tool(
        description="Add two integers.",
        annotations=READ_ONLY,
        meta={CACHE_TTL_META: ADD_CACHE_TTL_S},
    )
    def add(a: int, b: int) -> str:
        return str(a + b)

    @server.tool(description="Sleep for the given seconds, then answer.", annotations=READ_ONLY)
    async def slow(seconds: float) -> str:
        slow_calls["running"] += 1
        slow_calls["max"] = max(slow_calls["max"], slow_calls["running"])
        try:
            await asyncio.sleep(seconds)
        finally:
            slow_calls["running"] -= 1
        return f"slept {seconds:g}s"

    @server.tool(description="Evaluate '<int> <+|-|*> <int>'.", annotations=READ_ONLY)
    def calculator(expression: str) -> str:
        match = re.fullmatch(r"\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*", expression)
        if match is None:
            raise ToolError("expected '<int> <op> <int>'")
        a, op, b = int(match.group(1)), match.group(2), int(match.group(3))
        return str(a + b if op == "+" else a - b if op == "-" else a * b)

    @server.tool(description="Always fails.", annotations=READ_ONLY)
    def fail() -> str:
        raise ToolError("this tool always fails")

    @server.tool(
        description="Increment the side-effect counter and return its new value.",
        annotations=SIDE_EFFECT,
        meta={ACCEPTS_KEY_META: True},
    )
    def bump(ctx: Context) -> str:
        meta = ctx.request_context.meta
        key = meta.get(IDEMPOTENCY_META_KEY) if meta is not None else None
        if isinstance(key, str) and key in seen_keys:
            return str(bumps["count"])
        if isinstance(key, str):
            seen_keys.add(key)
        bumps["count"] += 1
        return str(bumps["count"])

    @server.tool(name=STATS_TOOL, description="Calls received per tool.", annotations=READ_ONLY)
    def stats() -> str:
        return json.dumps(
            {
                "calls": dict(calls),
                "bumps": bumps["count"],
                "max_slow_at_once": slow_calls["max"],
                "pid": os.getpid(),
            }
        )

    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="serve streamable HTTP on this port")
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead")
    args = parser.parse_args()
    server = create_server()
    if args.stdio:
        asyncio.run(server.run_stdio_async())
    elif args.port:
        asyncio.run(server.run_streamable_http_async(host=args.host, port=args.port))
    else:
        parser.error("give --port or --stdio")


if __name__ == "__main__":
    main()
