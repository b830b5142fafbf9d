"""Named agents on the real broker and Redis.

Two agents of ``tests/agent_defs`` (different instructions, tools and limits) answer side by
side in one worker; the scripted OpenAI-compatible server records the system prompt, the tools
and the parameters each one was offered. Then the contract both ways: a request encoded with the
released schema before ``agent`` existed is still answered (by the default agent), and a consumer
that still reads responses with the old ``AgentResponse`` schema reads the new responses.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.schemas.catalog import LOCAL_IDS
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.loader import released_schemas
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader, produce_raw
from tests.support.llm_servers import Arrival, FakeLLMServer, Reply, openai_completion
from tests.support.workers import worker_env

pytestmark = pytest.mark.integration

AGENT_DEFS = Path(__file__).parent / "agent_defs"
# The released versions before agents: AgentRequest 8 (no ``agent``), AgentResponse 7.
OLD_REQUEST_ID = 8
OLD_RESPONSE_ID = 7


def _scripted(arrival: Arrival) -> Reply:
    """Call the calculator once when it is offered, then answer naming the instructions."""
    body = arrival.body
    offered = [t["function"]["name"] for t in body.get("tools", [])]
    answered = any(m["role"] == "tool" for m in body["messages"])
    if "calculator" in offered and not answered:
        return Reply(
            body=openai_completion(None, tool_calls=[("c1", "calculator", '{"expression": "6*7"}')])
        )
    system = body["messages"][0]["content"]
    return Reply(body=openai_completion(f"answered as: {system.split('.')[0]}"))


@pytest.fixture
async def server() -> Any:
    async with FakeLLMServer() as srv:
        srv.responder = _scripted
        yield srv


@pytest.fixture
async def settings(settings_factory: Any, server: FakeLLMServer) -> Settings:
    s: Settings = settings_factory(
        kafka=FAST_KAFKA,
        timeouts={"shutdown_grace_s": 2.0},
        llm={
            "model": "p",
            "providers": {
                "p": {
                    "kind": "openai",
                    "model": "gpt-test",
                    "base_url": server.base_url,
                    "api_key": "sk-test",
                    "timeout_s": 20,
                }
            },
        },
        agents={"dir": AGENT_DEFS, "entry_points": False},
    )
    await ensure_topics(s)
    return s


async def test_two_agents_answer_side_by_side_in_one_worker(
    settings: Settings, server: FakeLLMServer
) -> None:
    async with PipelineWorker(settings) as worker, AgentClient(settings) as client:
        support, analyst = await asyncio.gather(
            client.ask(
                "Where is my order?",
                session_id="s-support",
                user_id="u1",
                tenant_id="acme",
                agent="support",
            ),
            client.ask(
                "What is 6 times 7?",
                session_id="s-analyst",
                user_id="u2",
                tenant_id="acme",
                agent="analyst",
            ),
        )
        catalog = worker.agents
    assert support.state == "COMPLETED", support.content
    assert analyst.state == "COMPLETED", analyst.content
    assert support.content == "answered as: You are the support agent of Acme"
    assert analyst.content == "answered as: You are the analyst"
    assert (support.agent, support.agent_version) == ("support", catalog.get("support").version)
    assert (analyst.agent, analyst.agent_version) == ("analyst", catalog.get("analyst").version)
    assert [c["name"] for c in analyst.tool_calls] == ["calculator"]
    assert support.tool_calls == []

    # what the model server was offered, per agent
    by_agent: dict[str, list[dict[str, Any]]] = {"support": [], "analyst": []}
    for arrival in server.arrivals:
        system = arrival.body["messages"][0]
        assert system["role"] == "system"
        who = "support" if "support agent" in system["content"] else "analyst"
        by_agent[who].append(arrival.body)
    assert len(by_agent["support"]) == 1  # one turn, no tools
    assert len(by_agent["analyst"]) == 2  # the calculator call, then the answer
    (s_body,) = by_agent["support"]
    assert s_body["messages"][0]["content"] == (
        "You are the support agent of Acme. Be polite and brief."
    )
    assert "tools" not in s_body  # tools = [] offers none
    assert s_body["temperature"] == 0.1
    for a_body in by_agent["analyst"]:
        assert a_body["messages"][0]["content"] == (
            "You are the analyst. Use the calculator for every sum.\n"
        )
        # "calc*" matches the calculator; current_time is not offered; agent.support is offered
        # as a tool (delegation; its wire name has no dot) with the support agent's description
        tools = {t["function"]["name"]: t["function"] for t in a_body["tools"]}
        assert list(tools) == ["calculator", "agent_support"]
        assert (
            tools["agent_support"]["description"]
            == "Answers customers' questions about their orders"
        )
        assert a_body["max_tokens"] == 300
        assert "temperature" not in a_body


def _old_wire(schema_id: int, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(out, released_schemas()[schema_id].parsed, record)
    return out.getvalue()


def _read_with(reader_id: int, data: bytes) -> dict[str, Any]:
    """What a consumer holding only the released schema ``reader_id`` reads from ``data``."""
    writer_id = struct.unpack(">I", data[1:5])[0]
    body = io.BytesIO(data[5:])
    record = fastavro.schemaless_reader(
        body, released_schemas()[writer_id].parsed, released_schemas()[reader_id].parsed
    )
    assert body.tell() == len(data) - 5
    assert isinstance(record, dict)
    return record


async def test_old_requests_are_answered_and_old_consumers_read_new_responses(
    settings: Settings,
) -> None:
    codec = AvroCodec()
    old = new_request("hello from an old client", session_id="s-old", user_id="u", tenant_id="t")
    unknown = new_request(
        "hello", session_id="s-unknown", user_id="u", tenant_id="t", agent="nobody"
    )
    async with (
        PipelineWorker(settings),
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.responses) as responses,
    ):
        waiting = client.expect(old["request_id"])
        await produce_raw(
            settings,
            settings.topics.requests,
            _old_wire(OLD_REQUEST_ID, old),
            key=b"s-old",
        )
        answer = await asyncio.wait_for(waiting, 30)
        refused = await client.request(unknown)
        await responses.wait_for(lambda: len(responses.records) >= 2, what="both responses")
    # backward: the old request (no agent field) was answered by the default agent
    assert answer.state == "COMPLETED"
    assert answer.agent == "default"
    assert answer.agent_version is not None
    # an unknown agent is an ERROR response, with no agent named on it
    assert refused.state == "ERROR"
    assert refused.error_code == "UNKNOWN_AGENT"
    assert refused.agent is None
    # forward: a consumer that knows only AgentResponse 7 reads what the worker wrote (13)
    raw = {codec.decode("AgentResponse", r.value)["request_id"]: r.value for r in responses.records}
    data = raw[old["request_id"]]
    assert struct.unpack(">I", data[1:5])[0] == LOCAL_IDS["io.agentstream.AgentResponse"]
    as_old = _read_with(OLD_RESPONSE_ID, data)
    assert "agent" not in as_old
    assert as_old["request_id"] == old["request_id"]
    assert as_old["content"] == answer.content
    assert as_old["state"] == "COMPLETED"


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentstream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_lists_shows_and_sends_to_an_agent(settings_factory: Any, tmp_path: Path) -> None:
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA, agents={"dir": AGENT_DEFS, "entry_points": False}
    )
    await ensure_topics(settings)
    env = worker_env(settings, {"AGENTSTREAM_AGENTS__DIR": str(AGENT_DEFS)})
    listed = await _cli(env, "agents", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert sorted(rows) == ["analyst", "default", "support"]
    assert rows["default"]["default"] is True
    shown = await _cli(env, "agents", "show", "analyst")
    assert shown.returncode == 0, shown.stderr
    definition = json.loads(shown.stdout)
    assert definition["version"] == rows["analyst"]["version"]
    assert definition["tools"] == ["calc*", "agent.support"]
    async with PipelineWorker(settings) as worker:
        sent = await _cli(env, "send", "add 2 and 3", "--agent", "analyst", "--wait")
    assert sent.returncode == 0, sent.stderr
    assert "The answer is 5." in sent.stdout
    assert f"agent: analyst@{worker.agents.get('analyst').version}" in sent.stdout
    # a worker whose catalog holds a broken definition does not start: one line, exit 2
    (tmp_path / "broken.toml").write_text('instructions = "x"\nmax_turns = 0\n')
    broken = await _cli({**env, "AGENTSTREAM_AGENTS__DIR": str(tmp_path)}, "worker")
    assert broken.returncode == 2
    assert broken.stderr.strip().count("\n") == 0, broken.stderr
    assert "broken.toml: max_turns: " in broken.stderr
