"""End-to-end pipeline tests on the real broker and real Redis (no mocks)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import msgspec
import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.llm.local import LocalRuleModel
from agentstream.schemas import dead_letter as dlq
from agentstream.schemas.codec import AvroCodec
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader, produce_raw

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(s)
    return s


def _expected(message: str) -> str:
    if message.startswith("add "):
        a, b = message.removeprefix("add ").split(" and ")
        return f"The answer is {int(a) + int(b)}."
    if "time" in message:
        return "Asia/Tokyo"
    return "(local rule model)"


async def test_200_requests_over_20_sessions_in_order(settings: Settings) -> None:
    rng = random.Random(7)
    plan: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in range(200):
        session = f"s{i % 20}"
        kind = rng.choice(["add", "time", "chat"])
        message = {
            "add": f"add {i} and {i * 2}",
            "time": "what time is it in Tokyo",
            "chat": f"hello number {i}",
        }[kind]
        plan[session].append(
            new_request(message, session_id=session, user_id=f"u{i % 20}", tenant_id="acme")
        )
    async with PipelineWorker(settings) as _, AgentClient(settings) as client:
        received: dict[str, list[Any]] = defaultdict(list)
        done = asyncio.Event()

        async def collect() -> None:
            n = 0
            async for response in client.responses():
                received[response.session_id].append(response)
                n += 1
                if n == 200:
                    done.set()
                    return

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)
        for idx in range(10):  # interleave sessions
            for session in sorted(plan):
                await client.submit(plan[session][idx])
        await asyncio.wait_for(done.wait(), timeout=90)
        await collector
    for session, requests in plan.items():
        got = received[session]
        assert [r.request_id for r in got] == [q["request_id"] for q in requests], session
        for request, response in zip(requests, got, strict=True):
            assert response.state == "COMPLETED", response
            assert _expected(request["message"]) in response.content
            if request["message"].startswith(("add", "what time")):
                assert len(response.tool_calls) == 1
                assert response.usage["prompt_tokens"] > 0


async def test_bad_inputs_get_their_documented_outcome(settings: Settings) -> None:
    codec = AvroCodec()
    topics = settings.topics
    dlq_topic = topics.dlq(topics.requests)
    async with (
        PipelineWorker(settings) as _,
        AgentClient(settings) as client,
        TopicReader(settings, dlq_topic) as dead,
        TopicReader(settings, topics.errors, codec, "ErrorEvent") as errors,
    ):
        before = await client.ask("add 1 and 1", session_id="bad", user_id="u", tenant_id="t")
        # undecodable bytes and a wrong schema (a response sent as a request) -> DLQ
        await produce_raw(
            settings, topics.requests, b"not avro at all", key=b"bad", headers=[("trace", b"abc")]
        )
        wrong = codec.encode(
            "ErrorEvent",
            {
                "event_id": "e",
                "request_id": "r",
                "code": "X",
                "message": "m",
                "stage": "s",
                "retriable": False,
                "attempt": 1,
                "time": 0,
            },
        )
        await produce_raw(settings, topics.requests, wrong, key=b"bad")
        empty = await client.ask("  \x00 ", session_id="bad", user_id="u", tenant_id="t")
        huge = await client.ask("x" * (32 * 1024 + 1), session_id="bad", user_id="u", tenant_id="t")
        unknown = await client.ask(
            "hi", session_id="bad", user_id="u", tenant_id="t", allowed_tools=["no_such_tool"]
        )
        bad_id = await client.ask("hi", session_id="bad session!", user_id="u", tenant_id="t")
        after = await client.ask("add 2 and 3", session_id="bad", user_id="u", tenant_id="t")

        assert before.content == "The answer is 2."
        assert after.content == "The answer is 5."
        for response, code in [
            (empty, "EMPTY_MESSAGE"),
            (huge, "MESSAGE_TOO_LARGE"),
            (unknown, "UNKNOWN_TOOL"),
            (bad_id, "INVALID_REQUEST"),
        ]:
            assert response.state == "ERROR"
            assert response.error_code == code
            assert response.content  # a clear message for the user
        await dead.wait_for(lambda: len(dead.records) == 2, what="2 dead letters")
        for record in dead.records:
            headers = dlq.header_map(list(record.headers))
            assert headers[dlq.ORIGINAL_TOPIC] == topics.requests
            assert int(headers[dlq.ORIGINAL_OFFSET]) >= 0
            assert headers[dlq.ORIGINAL_GROUP] == settings.consumer_group
            assert headers[dlq.ERROR_CODE] == "UNDECODABLE"
            assert (
                headers[dlq.EXCEPTION_FQCN] == "agentstream.schemas.exceptions.SerializationError"
            )
            assert headers[dlq.EXCEPTION_MESSAGE]
            assert record.key == b"bad"
        first = dead.records[0]
        assert first.value == b"not avro at all"
        assert dlq.header_map(list(first.headers))["trace"] == "abc"
        assert "magic" in dlq.header_map(list(first.headers))[dlq.EXCEPTION_MESSAGE]
        want = {
            "EMPTY_MESSAGE",
            "MESSAGE_TOO_LARGE",
            "UNKNOWN_TOOL",
            "INVALID_REQUEST",
            "UNDECODABLE",
        }
        await errors.wait_for(
            lambda: want <= {e["code"] for e in errors.values}, what="error events"
        )
        assert sum(e["code"] == "UNDECODABLE" for e in errors.values) == 2


async def test_repeated_request_id_is_answered_once(settings: Settings) -> None:
    codec = AvroCodec()
    topics = settings.topics
    async with (
        PipelineWorker(settings) as _,
        AgentClient(settings) as client,
        TopicReader(settings, topics.responses, codec, "AgentResponse") as responses,
        TopicReader(settings, topics.errors, codec, "ErrorEvent") as errors,
    ):
        request = new_request("add 4 and 4", session_id="dup", user_id="u", tenant_id="t")
        await client.submit(request)
        await client.submit(request)
        await errors.wait_for(
            lambda: any(e["code"] == "DUPLICATE_REQUEST" for e in errors.values),
            what="duplicate error event",
        )
        # a later request of the same session is answered after anything the repeat could cause
        sentinel = await client.ask("hello", session_id="dup", user_id="u", tenant_id="t")
        assert sentinel.state == "COMPLETED"
        await responses.wait_for(
            lambda: any(v["request_id"] == sentinel.request_id for v in responses.values)
        )
        answers = [v for v in responses.values if v["request_id"] == request["request_id"]]
        assert len(answers) == 1
        assert answers[0]["content"] == "The answer is 8."


async def test_runaway_tool_loop_stops_at_max_turns(settings: Settings) -> None:
    model = LocalRuleModel()
    async with PipelineWorker(settings, llm=model) as _, AgentClient(settings) as client:
        response = await client.ask("[loop] go", session_id="loop", user_id="u", tenant_id="t")
    assert response.state == "ERROR"
    assert response.error_code == "MAX_TURNS_EXCEEDED"
    assert model.calls == settings.limits.max_turns
    assert len(response.tool_calls) == settings.limits.max_turns


async def test_expired_context_mid_conversation_is_context_lost(settings: Settings) -> None:
    codec = AvroCodec()
    from datetime import UTC, datetime

    from agentstream.processors.progress import new_progress

    turn = {
        "request_id": "r-lost",
        "session_id": "gone",
        "user_id": "u",
        "tenant_id": "t",
        "turn": 1,
        "allowed_tools": [],
        "metadata": {},
        "tool_results": [
            {
                "call_id": "c",
                "name": "calculator",
                "content": "5",
                "is_error": False,
                "error_code": None,
                "duration_ms": 1.0,
            }
        ],
        "progress": msgspec.to_builtins(
            new_progress(datetime.now(UTC), 10), builtin_types=(datetime,)
        ),
        "deadline": None,
    }
    async with PipelineWorker(settings) as _, AgentClient(settings) as client:
        future = client.expect("r-lost")
        await produce_raw(
            settings, settings.topics.generation, codec.encode("GenerationTurn", turn), key=b"gone"
        )
        response = await asyncio.wait_for(future, 30)
    assert response.state == "ERROR"
    assert response.error_code == "CONTEXT_LOST"
    assert "restate" in response.content
