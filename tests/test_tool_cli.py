"""``agentstream tools list`` against a running MCP server and an unreachable one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from agentstream.embedded.process import free_port
from tests.mcp_servers.harness import CounterServer, servers_json

pytestmark = pytest.mark.integration


async def run_cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentstream.cli",
        *args,
        env={**os.environ, **env},
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_tools_list_shows_servers_tools_health_and_policies(tmp_path: Path) -> None:
    async with CounterServer(log_path=tmp_path / "counter.log") as counter:
        servers = servers_json(
            counter={"url": counter.url, "headers": {"Authorization": "Bearer s3cret"}},
            gone={"url": f"http://127.0.0.1:{free_port()}/mcp"},
        )
        env = {
            "AGENTSTREAM_TOOLS__MCP_SERVERS": json.dumps(servers),
            "AGENTSTREAM_TOOLS__DENY": json.dumps(["counter.bump"]),
            "AGENTSTREAM_TOOLS__CONNECT_TIMEOUT_S": "5",
            "AGENTSTREAM_RUN_DIR": str(tmp_path / "run"),
            "AGENTSTREAM_LOG_LEVEL": "ERROR",
            "COLUMNS": "200",
        }
        code, out, err = await run_cli("tools", "list", "--json", env=env, cwd=tmp_path)
        assert code == 0, err
        report: dict[str, Any] = json.loads(out)
        table_code, table, _ = await run_cli("tools", "list", env=env, cwd=tmp_path)
    servers_by_name = {s["name"]: s for s in report["servers"]}
    assert servers_by_name["counter"]["connected"]
    assert servers_by_name["counter"]["tool_count"] == 6
    assert not servers_by_name["gone"]["connected"]
    assert servers_by_name["gone"]["last_error"].startswith("ConnectError")
    tools = {t["name"]: t for t in report["tools"]}
    assert tools["calculator"]["server"] == "builtin"
    assert tools["counter.add"]["server"] == "counter"
    assert tools["counter.add"]["read_only"]
    assert tools["counter.add"]["cache_ttl_s"] == 120  # its _meta TTL; caching is opt-in
    assert tools["counter.calculator"]["cache_ttl_s"] == 0  # read-only, no TTL: not cached
    assert tools["current_time"]["cache_ttl_s"] == 0
    assert tools["counter.bump"]["accepts_idempotency_key"]
    assert tools["counter.bump"]["cache_ttl_s"] == 0
    assert not tools["counter.bump"]["permitted"]
    assert tools["counter.add"]["permitted"]
    assert "s3cret" not in out
    assert table_code == 0
    assert "counter.add" in table
    assert "MCP servers" in table
    assert "s3cret" not in table
