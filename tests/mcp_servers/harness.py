"""Run the project's counter MCP server in a subprocess on a free port; kill and restart it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mcp import Client

from agentstream.embedded.process import free_port

SERVER_SCRIPT = Path(__file__).with_name("counter_server.py")


class CounterServer:
    """``async with CounterServer() as server``: a fresh server process; ``server.url``."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float = 20.0) -> None:
        self._process = self._spawn()
        await self._wait_listening(timeout_s)

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, str(SERVER_SCRIPT), "--port", str(self.port)],
                stdout=log,
                stderr=log,
            )
        finally:
            if not isinstance(log, int):
                log.close()

    async def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"counter server exited with {self._process.returncode}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"counter server not listening on {self.port}") from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    async def restart(self) -> None:
        self.kill()
        await self.start()

    async def stats(self) -> dict[str, Any]:
        """Calls that reached the server, per tool name, and the side-effect counter."""
        async with Client(self.url, cache=None) as client:
            result = await client.call_tool("stats", {})
        block = result.content[0]
        assert block.type == "text"
        data: dict[str, Any] = json.loads(block.text)
        return data

    async def calls(self, tool: str | None = None) -> int:
        counts: dict[str, int] = (await self.stats())["calls"]
        return sum(counts.values()) if tool is None else counts.get(tool, 0)

    async def __aenter__(self) -> CounterServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.kill()


def servers_json(**servers: dict[str, Any]) -> dict[str, Any]:
    """``{"mcpServers": {...}}`` for settings."""
    return {"mcpServers": servers}
