"""The generation stage streams (agentstream.testing, no broker): per request or by the
setting's default, tool turns, and a redelivered turn answered from the step journal."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agentstream.agents import Agent
from agentstream.client_stream import StreamedText
from agentstream.config import Settings
from agentstream.schemas.contracts import AgentRequest, StreamDelta
from agentstream.testing import TestPipeline


def _request(message: str, *, stream: bool | None, agent: str | None = None) -> AgentRequest:
    return AgentRequest(
        request_id=uuid.uuid4().hex,
        session_id="s1",
        user_id="u1",
        tenant_id="t1",
        message=message,
        created_at=datetime.now(UTC),
        stream=stream,
        agent=agent,
    )


def _settings(**overrides: object) -> Settings:
    return Settings(redis_url=None, kafka_bootstrap_servers=None, **overrides)  # type: ignore[arg-type]


async def test_a_streaming_request_streams_every_turn_and_adds_up() -> None:
    async with TestPipeline(_settings()) as pipeline:
        response = await pipeline.send(_request("add 2 and 3", stream=True))
        deltas = pipeline.stream_deltas()
    text = StreamedText()
    for delta in deltas:
        text.add(delta)
    assert text.text == response.content == "The answer is 5."
    assert {d.turn for d in deltas} == {0, 1}
    assert all(d.attempt == 1 for d in deltas)


async def test_requests_follow_the_default_unless_they_say() -> None:
    async with TestPipeline(_settings(streaming={"default": True})) as pipeline:
        await pipeline.send(_request("hello", stream=None))
        streamed = len(pipeline.stream_deltas())
        await pipeline.send(_request("hello again", stream=False))
        assert len(pipeline.stream_deltas()) == streamed > 0
    async with TestPipeline(_settings()) as pipeline:
        await pipeline.send(_request("hello", stream=None))
        assert pipeline.stream_deltas() == []


async def test_an_agent_default_comes_between_the_request_and_the_setting() -> None:
    chatty = Agent(name="chatty", instructions="Be brief.", stream=True)
    async with TestPipeline(_settings(), agents=[chatty]) as pipeline:
        await pipeline.send(_request("hello", stream=None, agent="chatty"))
        streamed = len(pipeline.stream_deltas())
        assert streamed > 0
        await pipeline.send(_request("hello again", stream=False, agent="chatty"))
        await pipeline.send(_request("hello", stream=None))  # the default agent: setting off
        assert len(pipeline.stream_deltas()) == streamed


async def test_a_redelivered_turn_streams_its_journaled_answer_as_a_new_attempt() -> None:
    # every turn through the generation topic, so the test can redeliver the first one
    async with TestPipeline(_settings(kafka={"local_handoff": False})) as pipeline:
        response = await pipeline.send(_request("hello there", stream=True))
        calls = pipeline.llm.calls  # type: ignore[attr-defined]
        turn = pipeline.published[pipeline.settings.topics.generation][-1]
        pipeline.publish_raw(turn.topic, turn.value, key="s1")  # Kafka redelivers the turn
        await pipeline.run_until_quiet()
        deltas = pipeline.stream_deltas()
    assert pipeline.llm.calls == calls  # type: ignore[attr-defined]  # not asked again
    assert sorted({d.attempt for d in deltas}) == [1, 2]
    text = StreamedText()
    for delta in deltas:
        text.add(delta)
    assert (text.attempt, text.final, text.text) == (2, True, response.content)


def _delta(turn: int, attempt: int, sequence: int, text: str, final: bool = False) -> StreamDelta:
    return StreamDelta(
        request_id="r",
        session_id="s",
        tenant_id="t",
        turn=turn,
        attempt=attempt,
        sequence=sequence,
        text=text,
        final=final,
        time=datetime.now(UTC),
    )


def test_streamed_text_keeps_the_latest_attempt_of_the_latest_turn() -> None:
    text = StreamedText()
    assert not text.add(_delta(0, 1, 0, "", final=True))  # a tool turn without text
    assert not text.add(_delta(1, 1, 0, "The ans"))  # nothing shown was dropped
    assert text.add(_delta(1, 2, 0, "The answer"))  # a retry: drop "The ans"
    assert not text.add(_delta(1, 1, 1, "wer is"))  # a late delta of the old attempt
    assert not text.add(_delta(1, 2, 1, " is 5.", final=True))
    assert (text.turn, text.attempt, text.final, text.text) == (1, 2, True, "The answer is 5.")
