"""Python tools end to end on the real broker and Redis, driven by the local model's ``call``
directive: a sync read-only cacheable tool, an async read-only tool that is not cacheable, a
side-effecting tool that takes the idempotency key; the cache bypass for one request (client
metadata and ``agentstream send --no-cache``); a broken module path refused in one line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.client import AgentClient, AgentResponse
from agentstream.config import Settings
from agentstream.state.journal import tool_step_id
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support import python_tools as sample
from tests.support.kafka import FAST_KAFKA
from tests.support.workers import worker_env

pytestmark = pytest.mark.integration

MODULE = "tests.support.python_tools"
CLI = [sys.executable, "-m", "agentstream.cli"]
BYPASS = {"cache": "bypass"}


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    sample.reset()
    yield
    sample.reset()


@pytest.fixture
async def settings(settings_factory: Any) -> Settings:
    made: Settings = settings_factory(
        kafka=FAST_KAFKA, tools={"python_modules": [MODULE], "python_entry_points": False}
    )
    await ensure_topics(made)
    return made


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AgentClient]:
    async with PipelineWorker(settings) as worker, AgentClient(settings) as agent_client:
        assert worker.tools.has("read_note")
        yield agent_client


class Asker:
    """Each question in a session of its own (no history, no response-cache interplay)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client
        self.count = 0

    async def __call__(self, message: str, **fields: Any) -> AgentResponse:
        self.count += 1
        response = await self.client.ask(
            message, session_id=f"py-{self.count}", user_id="u", tenant_id="acme", **fields
        )
        assert response.state == "COMPLETED", response
        return response


async def test_python_tools_end_to_end_with_opt_in_cache_and_bypass(client: AgentClient) -> None:
    ask = Asker(client)
    read = 'call read_note {"key": "plan"}'
    peek = 'call peek_note {"key": "plan"}'

    # sync, read-only, cacheable (60 s): called once, off the event loop, then served cached
    sample.NOTES["plan"] = "v1"
    first = await ask(read)
    assert first.content == "v1"
    [call] = first.tool_calls
    assert (call["name"], call["is_error"]) == ("read_note", False)
    assert sample.THREADS
    assert threading.get_ident() not in sample.THREADS
    sample.NOTES["plan"] = "v2"
    assert (await ask(read)).content == "v1"
    assert sample.CALLS["read_note"] == 1

    # bypass for one request: the tool runs (fresh content) and the entry is refreshed ...
    assert (await ask(read, metadata=BYPASS)).content == "v2"
    assert sample.CALLS["read_note"] == 2
    # ... and only for that request: the next one is served from the cache again
    sample.NOTES["plan"] = "v3"
    assert (await ask(read)).content == "v2"
    assert sample.CALLS["read_note"] == 2

    # async, read-only, NOT configured cacheable: called every time, fresh content each time
    assert (await ask(peek)).content == "v3"
    sample.NOTES["plan"] = "v4"
    assert (await ask(peek)).content == "v4"
    assert sample.CALLS["peek_note"] == 2


async def test_side_effecting_python_tool_gets_the_idempotency_key(client: AgentClient) -> None:
    ask = Asker(client)
    done = await ask('call append_log {"line": "deployed"}')
    assert done.content == "appended line 1"
    assert sample.LOG == ["deployed"]
    key = tool_step_id(done.request_id, 0, 0)
    assert [key] == sample.KEYS
    # side-effecting tools are never cached: the same arguments run again (a new key)
    again = await ask('call append_log {"line": "deployed"}')
    assert again.content == "appended line 2"
    assert sample.KEYS[1] == tool_step_id(again.request_id, 0, 0)


async def test_invalid_arguments_reach_the_model_not_the_tool(client: AgentClient) -> None:
    ask = Asker(client)
    response = await ask('call read_note {"key": 7}')
    [call] = response.tool_calls
    assert call["is_error"]
    assert call["error_code"] == "TOOL_INVALID_ARGUMENTS"
    assert response.content.startswith("Error: invalid arguments for tool 'read_note'")
    assert sample.CALLS["read_note"] == 0


async def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [*CLI, *args],
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_send_no_cache_bypasses_the_tool_cache_for_one_request(
    client: AgentClient, settings: Settings
) -> None:
    read = 'call read_note {"key": "plan"}'
    sample.NOTES["plan"] = "old"
    cached = await run_cli(settings, "send", read, "--wait")
    assert cached.returncode == 0, cached.stderr
    assert "COMPLETED old" in cached.stdout
    sample.NOTES["plan"] = "new"
    served = await run_cli(settings, "send", read, "--wait")
    assert "COMPLETED old" in served.stdout, served.stdout
    fresh = await run_cli(settings, "send", read, "--wait", "--no-cache")
    assert fresh.returncode == 0, fresh.stderr
    assert "COMPLETED new" in fresh.stdout, fresh.stdout
    assert sample.CALLS["read_note"] == 2


@pytest.mark.parametrize("command", [["worker"], ["tools", "list"]], ids=" ".join)
def test_a_broken_module_path_stops_the_start_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AGENTSTREAM_")}
    env.update(
        {
            "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
            "AGENTSTREAM_REDIS_URL": "redis://127.0.0.1:9/0",
            "AGENTSTREAM_RUN_DIR": str(tmp_path / "run"),
            "AGENTSTREAM_TOOLS__PYTHON_MODULES": json.dumps(["my_tools.crm"]),
        }
    )
    done = subprocess.run(
        [*CLI, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "tools.python_modules (AGENTSTREAM_TOOLS__PYTHON_MODULES)" in lines[0]
    assert "'my_tools.crm'" in lines[0]
    assert "No module named 'my_tools'" in lines[0]
