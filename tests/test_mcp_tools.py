"""MCP tools through the worker's executor, against real MCP servers and the real Redis.

The project-owned counter server (``tests/mcp_servers/counter_server.py``) runs as a subprocess
over streamable HTTP; its ``stats`` tool reports every ``tools/call`` that reached it, which is
how these tests prove that denied, invalid and unknown calls never got there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from agentstream.config import Settings
from agentstream.state.redis import redis_from_settings
from agentstream.tools.base import CallContext
from agentstream.tools.executor import PolicyExecutor
from agentstream.tools.factory import build_tools
from tests.mcp_servers.harness import SERVER_SCRIPT, CounterServer, servers_json
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

FAST_RECONNECT = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.3, "connect_timeout_s": 10}


def ctx(tenant: str = "acme", user: str = "ann", **fields: Any) -> CallContext:
    return CallContext(tenant_id=tenant, user_id=user, request_id="r1", session_id="s1", **fields)


@pytest.fixture
async def counter(tmp_path: Path) -> AsyncIterator[CounterServer]:
    async with CounterServer(log_path=tmp_path / "counter.log") as server:
        yield server


@pytest.fixture
async def redis(settings_factory: Any) -> AsyncIterator[Redis]:
    client = redis_from_settings(settings_factory())
    yield client
    await client.aclose()


ExecutorFactory = Callable[..., Awaitable[PolicyExecutor]]


@pytest.fixture
async def make_executor(
    settings_factory: Any, redis: Redis, counter: CounterServer
) -> AsyncIterator[ExecutorFactory]:
    """``await make_executor(server_entry=..., **tool_settings)``: a started executor."""
    started: list[PolicyExecutor] = []

    async def make(server: dict[str, Any] | None = None, **tools: Any) -> PolicyExecutor:
        entry = {"url": counter.url, **(server or {})}
        settings: Settings = settings_factory(
            tools={"mcp_servers": servers_json(counter=entry), **FAST_RECONNECT, **tools}
        )
        executor = build_tools(settings, redis=redis)
        await executor.start()
        started.append(executor)
        return executor

    yield make
    for executor in started:
        await executor.stop()


async def test_counter_server_tools_are_discovered_with_schemas_and_policies(
    make_executor: ExecutorFactory,
) -> None:
    executor = await make_executor()
    names = {spec.name for spec in executor.specs()}
    assert {"calculator", "current_time", "counter.add", "counter.slow", "counter.bump"} <= names
    add = next(s for s in executor.specs(["counter.add"]))
    assert add.input_schema["required"] == ["a", "b"]
    assert executor.policy("counter.add").read_only
    bump = executor.policy("counter.bump")
    assert not bump.read_only
    assert bump.accepts_idempotency_key
    assert not bump.idempotent
    assert not executor.read_only("counter.bump")
    [server] = executor.health()["servers"]
    assert server["connected"]
    assert server["tool_count"] == 6


async def test_five_parallel_slow_calls_overlap(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor()
    started = time.perf_counter()
    outcomes = await asyncio.gather(
        *(
            executor.execute("counter.slow", {"seconds": 1}, timeout_s=10, call=ctx())
            for _ in range(5)
        )
    )
    elapsed = time.perf_counter() - started
    assert [o.is_error for o in outcomes] == [False] * 5
    assert elapsed < 2.5, f"5 parallel slow(1) calls took {elapsed:.2f}s"
    assert (await counter.stats())["max_slow_at_once"] == 5


async def test_concurrency_limit_per_server(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor(server={"max_concurrency": 2})
    outcomes = await asyncio.gather(
        *(
            executor.execute("counter.slow", {"seconds": 0.2}, timeout_s=10, call=ctx())
            for _ in range(5)
        )
    )
    assert not any(o.is_error for o in outcomes)
    stats = await counter.stats()
    assert stats["calls"]["slow"] == 5
    assert stats["max_slow_at_once"] == 2


async def test_a_failing_call_does_not_affect_its_siblings(make_executor: ExecutorFactory) -> None:
    executor = await make_executor()
    add, fail, slow, add2 = await asyncio.gather(
        executor.execute("counter.add", {"a": 1, "b": 2}, timeout_s=10, call=ctx()),
        executor.execute("counter.fail", {}, timeout_s=10, call=ctx()),
        executor.execute("counter.slow", {"seconds": 0.2}, timeout_s=10, call=ctx()),
        executor.execute("counter.add", {"a": 3, "b": 4}, timeout_s=10, call=ctx()),
    )
    assert (add.content, add.is_error) == ("3", False)
    assert fail.is_error
    assert fail.error_code == "TOOL_FAILED"
    assert "this tool always fails" in fail.content
    assert fail.content.startswith("Error: ")
    assert not slow.is_error
    assert add2.content == "7"
    after = await executor.execute("counter.add", {"a": 5, "b": 5}, timeout_s=10, call=ctx())
    assert after.content == "10"
    assert executor.health()["servers"][0]["connected"]


async def test_server_killed_mid_call_gives_a_tool_error_and_recovers_after_restart(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor()
    assert executor.toolset is not None
    connection = executor.toolset.connections["counter"]
    in_flight = asyncio.create_task(
        executor.execute("counter.slow", {"seconds": 60}, timeout_s=120, call=ctx())
    )

    async def slow_started() -> bool:
        return await counter.calls("slow") == 1

    await wait_until(slow_started, "the slow call to reach the server")
    counter.kill()
    outcome = await asyncio.wait_for(in_flight, 30)
    assert outcome.is_error
    assert outcome.error_code == "TOOL_UNAVAILABLE"
    assert "counter" in outcome.content

    down = await executor.execute("counter.add", {"a": 1, "b": 1}, timeout_s=10, call=ctx())
    assert down.is_error
    assert down.error_code == "TOOL_UNAVAILABLE"
    assert executor.has("counter.add")  # tools stay known while the server reconnects
    [health] = executor.health()["servers"]
    assert not health["connected"]
    assert health["last_error"]

    await counter.start()

    async def reconnected() -> bool:
        return connection.connected

    await wait_until(reconnected, "the registry to reconnect")
    again = await executor.execute("counter.add", {"a": 5, "b": 2}, timeout_s=10, call=ctx())
    assert (again.content, again.is_error) == ("7", False)
    assert executor.health()["servers"][0]["connects"] == 2


async def test_denied_invalid_and_unknown_calls_never_reach_the_server(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor(
        tenants={"acme": {"deny": ["counter.add"], "users": {"bob": {"allow": ["time.*"]}}}}
    )
    denied = await executor.execute("counter.add", {"a": 1, "b": 2}, timeout_s=10, call=ctx())
    assert denied.error_code == "TOOL_ACCESS_DENIED"
    assert denied.content == "Error: tool access denied: counter.add"
    user_denied = await executor.execute(
        "counter.slow", {"seconds": 0}, timeout_s=10, call=ctx(user="bob")
    )
    assert user_denied.error_code == "TOOL_ACCESS_DENIED"
    narrowed = await executor.execute(
        "counter.slow",
        {"seconds": 0},
        timeout_s=10,
        call=ctx(tenant="other", request_allowed=("calculator",)),
    )
    assert narrowed.error_code == "TOOL_ACCESS_DENIED"
    invalid = await executor.execute("counter.add", {"a": "x"}, timeout_s=10, call=ctx("other"))
    assert invalid.error_code == "TOOL_INVALID_ARGUMENTS"
    assert invalid.content.startswith("Error: invalid arguments for tool 'counter.add'")
    assert "'x'" not in invalid.content  # the message names the problem, not the value
    wrong_type = await executor.execute(
        "counter.add", {"a": 1, "b": "2"}, timeout_s=10, call=ctx("other")
    )
    assert wrong_type.error_code == "TOOL_INVALID_ARGUMENTS"
    unknown = await executor.execute("counter.nope", {}, timeout_s=10, call=ctx("other"))
    assert unknown.error_code == "TOOL_NOT_FOUND"

    assert await counter.calls() == 0

    allowed = await executor.execute(
        "counter.add", {"a": 1, "b": 2}, timeout_s=10, call=ctx("other")
    )
    assert allowed.content == "3"
    assert await counter.calls() == 1  # the counter does count calls that arrive


async def test_read_only_result_is_cached_per_tenant_within_its_ttl(
    make_executor: ExecutorFactory, counter: CounterServer, redis: Redis
) -> None:
    executor = await make_executor()
    args = {"a": 2, "b": 3}
    first = await executor.execute("counter.add", args, timeout_s=10, call=ctx())
    second = await executor.execute("counter.add", {"b": 3, "a": 2}, timeout_s=10, call=ctx())
    assert first.content == second.content == "5"
    assert await counter.calls("add") == 1
    assert executor.health()["tools"]["counter.add"]["cache_hits"] == 1

    assert executor.cache is not None
    ttl = await redis.ttl(executor.cache.key("acme", "counter.add", args))
    assert 0 < ttl <= 900

    await executor.execute("counter.add", args, timeout_s=10, call=ctx(bypass_cache=True))
    assert await counter.calls("add") == 2
    await executor.execute("counter.add", args, timeout_s=10, call=ctx(tenant="other"))
    assert await counter.calls("add") == 3
    await executor.execute("counter.add", {"a": 2, "b": 4}, timeout_s=10, call=ctx())
    assert await counter.calls("add") == 4

    # side-effecting tools and error results are never cached
    for _ in range(2):
        await executor.execute("counter.bump", {}, timeout_s=10, call=ctx())
        await executor.execute("counter.fail", {}, timeout_s=10, call=ctx())
    stats = await counter.stats()
    assert stats["calls"]["bump"] == 2
    assert stats["bumps"] == 2
    assert stats["calls"]["fail"] == 2


async def test_cache_ttl_overrides_per_tool_and_per_server(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor(
        server={"cache_ttl_s": 0}, overrides={"counter.calculator": {"cache_ttl_s": 60}}
    )
    assert executor.cache_ttl_s("counter.add") == 0
    assert executor.cache_ttl_s("counter.calculator") == 60
    for _ in range(2):
        await executor.execute("counter.add", {"a": 1, "b": 1}, timeout_s=10, call=ctx())
        await executor.execute(
            "counter.calculator", {"expression": "2 * 3"}, timeout_s=10, call=ctx()
        )
    stats = await counter.stats()
    assert stats["calls"] == {"add": 2, "calculator": 1}


async def test_per_tool_timeout_override(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor(overrides={"counter.slow": {"timeout_s": 0.2}})
    outcome = await executor.execute("counter.slow", {"seconds": 30}, timeout_s=60, call=ctx())
    assert outcome.error_code == "TOOL_TIMEOUT"
    assert "0.2s" in outcome.content
    assert executor.health()["servers"][0]["connected"]  # a timeout is not a broken server
    ok = await executor.execute("counter.add", {"a": 1, "b": 1}, timeout_s=10, call=ctx())
    assert ok.content == "2"


async def test_server_timeout_applies_to_its_tools(
    make_executor: ExecutorFactory,
) -> None:
    executor = await make_executor(server={"timeout_s": 0.2})
    outcome = await executor.execute("counter.slow", {"seconds": 30}, timeout_s=60, call=ctx())
    assert outcome.error_code == "TOOL_TIMEOUT"


async def test_idempotency_key_reaches_the_server(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor()
    key = "r1:t0:c0"
    first = await executor.execute("counter.bump", {}, timeout_s=10, call=ctx(idempotency_key=key))
    repeat = await executor.execute("counter.bump", {}, timeout_s=10, call=ctx(idempotency_key=key))
    other = await executor.execute(
        "counter.bump", {}, timeout_s=10, call=ctx(idempotency_key="r1:t0:c1")
    )
    assert (first.content, repeat.content, other.content) == ("1", "1", "2")
    stats = await counter.stats()
    assert stats["calls"]["bump"] == 3
    assert stats["bumps"] == 2


async def test_unreachable_server_does_not_stop_the_worker(settings_factory: Any) -> None:
    from agentstream.embedded.process import free_port

    port = free_port()
    settings: Settings = settings_factory(
        tools={
            "mcp_servers": servers_json(gone={"url": f"http://127.0.0.1:{port}/mcp"}),
            **FAST_RECONNECT,
        }
    )
    executor = build_tools(settings)
    await executor.start()
    try:
        assert executor.has("calculator")
        assert not executor.has("gone.anything")
        [health] = executor.health()["servers"]
        assert not health["connected"]
        assert health["last_error"].startswith("ConnectError")
        async with CounterServer(port=port):
            assert executor.toolset is not None
            connection = executor.toolset.connections["gone"]

            async def connected() -> bool:
                return connection.connected

            await wait_until(connected, "the late server to connect")
            assert executor.has("gone.add")
    finally:
        await executor.stop()


async def test_third_party_time_server_over_stdio(settings_factory: Any) -> None:
    settings: Settings = settings_factory(
        tools={
            "mcp_servers": servers_json(
                time={"command": sys.executable, "args": ["-m", "mcp_server_time"]}
            )
        }
    )
    executor = build_tools(settings)
    await executor.start()
    try:
        policy = executor.policy("time.get_current_time")
        assert policy.read_only
        assert policy.idempotent
        outcome = await executor.execute(
            "time.get_current_time", {"timezone": "Asia/Tokyo"}, timeout_s=10, call=ctx()
        )
        assert not outcome.is_error, outcome.content
        assert re.search(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+09:00", outcome.content)
        bad = await executor.execute(
            "time.get_current_time", {"timezone": "Nowhere/Atlantis"}, timeout_s=10, call=ctx()
        )
        assert bad.error_code == "TOOL_FAILED"
        missing = await executor.execute("time.get_current_time", {}, timeout_s=10, call=ctx())
        assert missing.error_code == "TOOL_INVALID_ARGUMENTS"
        assert (settings.run_dir / "mcp" / "time.stderr.log").exists()
    finally:
        await executor.stop()


async def test_stdio_server_killed_mid_call_is_respawned(settings_factory: Any) -> None:
    entry = {"command": sys.executable, "args": [str(SERVER_SCRIPT), "--stdio"]}
    settings: Settings = settings_factory(
        tools={"mcp_servers": servers_json(local=entry), **FAST_RECONNECT}
    )
    executor = build_tools(settings)
    await executor.start()
    try:
        assert executor.toolset is not None
        connection = executor.toolset.connections["local"]

        async def stats() -> dict[str, Any]:
            outcome = await executor.execute("local.stats", {}, timeout_s=10, call=ctx())
            assert not outcome.is_error, outcome.content
            data: dict[str, Any] = json.loads(outcome.content)
            return data

        first_pid = (await stats())["pid"]
        in_flight = asyncio.create_task(
            executor.execute("local.slow", {"seconds": 60}, timeout_s=120, call=ctx())
        )

        async def slow_started() -> bool:
            return (await stats())["calls"].get("slow", 0) == 1

        await wait_until(slow_started, "the slow call to reach the server")
        os.kill(first_pid, signal.SIGKILL)
        outcome = await asyncio.wait_for(in_flight, 30)
        assert outcome.error_code == "TOOL_UNAVAILABLE"

        async def respawned() -> bool:
            return connection.connected

        await wait_until(respawned, "a new server process")
        assert (await stats())["pid"] != first_pid
        again = await executor.execute("local.add", {"a": 1, "b": 2}, timeout_s=10, call=ctx())
        assert again.content == "3"
    finally:
        await executor.stop()


async def test_health_check_notices_a_dead_idle_server(
    make_executor: ExecutorFactory, counter: CounterServer
) -> None:
    executor = await make_executor(health_check_interval_s=0.1)
    assert executor.toolset is not None
    connection = executor.toolset.connections["counter"]
    counter.kill()

    async def disconnected() -> bool:
        return not connection.connected

    await wait_until(disconnected, "the health check to mark the server down")
    assert executor.health()["servers"][0]["last_error"]
    await counter.start()

    async def reconnected() -> bool:
        return connection.connected

    await wait_until(reconnected, "the server to reconnect")
    ok = await executor.execute("counter.add", {"a": 2, "b": 2}, timeout_s=10, call=ctx())
    assert ok.content == "4"
