"""MCP tool calls through the worker's tool executor (permissions, validation, timeouts, metrics).

Starts the project's counter MCP server (streamable HTTP) in a subprocess and prints:

- wall time of 5 parallel ``slow(1)`` calls, per round (target <= 1.05 s; sequential is 5 s);
- per-call latency of ``add`` through the executor vs the bare ``mcp.Client`` (p50/p95);
- per-call latency of ``get_current_time`` on the real ``mcp-server-time`` over stdio.

No result cache (no Redis), so every call reaches its server.

    .venv/bin/python bench/mcp_parallel.py [--rounds 5] [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import percentile
from mcp import Client

from agentstream.config import Settings
from agentstream.tools.base import CallContext
from agentstream.tools.factory import build_tools

SERVER = Path(__file__).resolve().parent.parent / "tests" / "mcp_servers" / "counter_server.py"
CALL = CallContext(tenant_id="bench", user_id="u", request_id="r", session_id="s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


def ms(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:.2f} ms, p95 {percentile(values, 0.95) * 1000:.2f} ms"
    )


def spawn_server(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SERVER), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main(rounds: int, calls: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    server = spawn_server(port)
    try:
        await wait_listening(port)
        with tempfile.TemporaryDirectory() as run_dir:
            settings = Settings(
                run_dir=Path(run_dir),
                tools={
                    "mcp_servers": {
                        "mcpServers": {
                            "counter": {"url": url},
                            "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
                        }
                    }
                },
            )
            executor = build_tools(settings)
            started = time.perf_counter()
            await executor.start()
            print(f"connect both servers: {(time.perf_counter() - started) * 1000:.0f} ms")
            try:
                walls = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    outcomes = await asyncio.gather(
                        *(
                            executor.execute(
                                "counter.slow", {"seconds": 1}, timeout_s=30, call=CALL
                            )
                            for _ in range(5)
                        )
                    )
                    walls.append(time.perf_counter() - t0)
                    assert not any(o.is_error for o in outcomes)
                print(
                    "5 parallel slow(1): "
                    + ", ".join(f"{w:.3f}" for w in walls)
                    + f" s (median {statistics.median(walls):.3f} s, max {max(walls):.3f} s;"
                    " target <= 1.05 s, sequential 5 s)"
                )

                via_executor = []
                for i in range(calls):
                    t0 = time.perf_counter()
                    outcome = await executor.execute(
                        "counter.add", {"a": i, "b": 1}, timeout_s=10, call=CALL
                    )
                    via_executor.append(time.perf_counter() - t0)
                    assert not outcome.is_error
                async with Client(url, cache=None) as client:
                    bare = []
                    for i in range(calls):
                        t0 = time.perf_counter()
                        await client.call_tool("add", {"a": i, "b": 1})
                        bare.append(time.perf_counter() - t0)
                print(f"add over HTTP, {calls} calls: executor {ms(via_executor)}; bare {ms(bare)}")

                stdio = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    outcome = await executor.execute(
                        "time.get_current_time", {"timezone": "Asia/Tokyo"}, timeout_s=10, call=CALL
                    )
                    stdio.append(time.perf_counter() - t0)
                    assert not outcome.is_error
                print(f"time.get_current_time over stdio, {calls} calls: {ms(stdio)}")
            finally:
                await executor.stop()
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.calls))
