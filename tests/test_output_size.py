"""Issue 14, defect 2: size is a first-class limit (real broker, real Redis, no mocks).

Before the fix, a record over 1 MiB was never delivered: the producer refused it
(``MessageSizeTooLargeError``), the runner retried the publish every 2 s forever, and the
partition's committed offset stopped. Now every output is measured against the broker's record
limit before it is sent: a too-large dead letter goes without its payload (with headers saying
so), a too-large answer or tool batch ends as an ERROR response ``OUTPUT_TOO_LARGE`` plus an
ErrorEvent and releases the session, and a record the producer refuses is never retried.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import replace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.processors.base import Inbound, Outbound, StageResult
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.streams.admin import admin_client, ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.message_size import (
    BROKER_LIMIT,
    TOPIC_LIMIT,
    config_values,
    detect_size_limit,
    record_size,
)
from agentstream.streams.publisher import Publisher
from agentstream.streams.replay import replay
from agentstream.streams.runner import StageRunner
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.llm_servers import FakeLLMServer, Reply, openai_completion

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture
async def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA, timeouts={"shutdown_grace_s": 2.0})
    await ensure_topics(s)
    return s


@pytest.fixture
async def server() -> Any:
    async with FakeLLMServer() as srv:
        yield srv


def _model(server: FakeLLMServer) -> dict[str, Any]:
    return {
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
    }


async def _committed(settings: Settings, tp: TopicPartition) -> int:
    async with admin_client(settings) as admin:
        offsets = await admin.list_consumer_group_offsets(settings.consumer_group, partitions=[tp])
    meta = offsets.get(tp)
    return -1 if meta is None else int(meta.offset)


async def _wait_committed_past(settings: Settings, tp: TopicPartition, offset: int) -> int:
    deadline = time.monotonic() + 30
    while True:
        committed = await _committed(settings, tp)
        if committed > offset:
            return committed
        if time.monotonic() > deadline:
            raise AssertionError(f"committed offset of {tp} stayed at {committed} (<= {offset})")
        await asyncio.sleep(0.1)


async def test_limit_falls_back_to_the_setting_when_the_broker_does_not_report_it(
    settings_factory: Any,
) -> None:
    s: Settings = settings_factory(kafka={**FAST_KAFKA, "max_message_bytes": 300_000})
    await ensure_topics(s)
    limit = await detect_size_limit(s)
    # Tansu reports no topic or broker configs; a Kafka broker reports max.message.bytes
    if limit.source == "setting":
        assert limit.max_bytes == 300_000
    else:
        assert limit.max_bytes > 0


@pytest.fixture
async def big_requests(settings_factory: Any, kafka_replication_factor: int) -> Settings:
    """Topics whose requests topic takes records up to 4 MiB, while the rest (the dead-letter
    topic too) keep the broker's ~1 MiB: a real broker refuses a bigger record at produce time,
    so this is how a too-large-to-dead-letter request reaches a worker there."""
    s: Settings = settings_factory(kafka=FAST_KAFKA, timeouts={"shutdown_grace_s": 2.0})
    async with admin_client(s) as admin:
        await admin.create_topics(
            [
                NewTopic(
                    name=s.topics.requests,
                    num_partitions=s.topics.partitions,
                    replication_factor=kafka_replication_factor,
                    topic_configs={"max.message.bytes": str(4 * MiB)},
                )
            ]
        )
    await ensure_topics(s)
    return s


async def test_oversized_request_is_dead_lettered_without_payload_and_the_partition_moves_on(
    big_requests: Settings,
) -> None:
    settings = big_requests
    codec = AvroCodec()
    topics = settings.topics
    big = os.urandom(MiB + 1000)  # over the 1 MiB limit, so its dead letter is too
    async with (
        PipelineWorker(settings) as worker,
        AgentClient(settings) as client,
        TopicReader(settings, topics.dlq(topics.requests)) as dead,
        TopicReader(settings, topics.errors, codec, "ErrorEvent") as errors,
    ):
        assert worker.size_limit is not None
        assert worker.size_limit.max_bytes < len(big)
        producer = AIOKafkaProducer(**client_kwargs(settings), max_request_size=4 * MiB)
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                topics.requests, value=big, key=b"big", headers=[("trace", b"abc")]
            )
        finally:
            await producer.stop()
        # a later request on the same partition (same key) is answered
        after = await client.ask("add 2 and 3", session_id="big", user_id="u", tenant_id="t")
        assert after.state == "COMPLETED"
        assert after.content == "The answer is 5."

        await dead.wait_for(lambda: len(dead.records) == 1, what="the dead letter")
        record = dead.records[0]
        headers = dl.header_map(list(record.headers))
        assert record.value == b""
        assert headers[dl.PAYLOAD_OMITTED] == str(len(big))
        assert headers["trace"] == "abc"  # the original's headers are kept
        assert record.key == b"big"
        assert headers[dl.ORIGINAL_TOPIC] == topics.requests
        assert headers[dl.ORIGINAL_PARTITION] == str(sent.partition)
        assert headers[dl.ORIGINAL_OFFSET] == str(sent.offset)
        assert headers[dl.ERROR_CODE] == "UNDECODABLE"
        await errors.wait_for(
            lambda: any(e["code"] == "UNDECODABLE" for e in errors.values), what="ErrorEvent"
        )
        await _wait_committed_past(
            settings, TopicPartition(topics.requests, sent.partition), sent.offset
        )
    # nothing to replay: the replay skips it and says why
    summary = await replay(settings, topics.dlq(topics.requests), codec)
    assert (summary.matched, summary.no_payload, summary.replayed) == (1, 1, 0)


async def test_five_megabyte_completion_is_output_too_large_and_the_session_is_released(
    settings_factory: Any, server: FakeLLMServer
) -> None:
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA, timeouts={"shutdown_grace_s": 2.0}, llm=_model(server)
    )
    await ensure_topics(settings)
    codec = AvroCodec()
    server.push(Reply(body=openai_completion("x" * (5 * 1000 * 1000))))
    server.default = Reply(body=openai_completion("A short answer."))
    async with (
        PipelineWorker(settings) as worker,
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.errors, codec, "ErrorEvent") as errors,
    ):
        huge = await client.ask("write a lot", session_id="s5", user_id="u", tenant_id="t")
        assert huge.state == "ERROR"
        assert huge.error_code == "OUTPUT_TOO_LARGE"
        assert worker.size_limit is not None  # the setting on Tansu, the broker's on Kafka
        limit = worker.size_limit.max_bytes
        assert "too large" in huge.content
        await errors.wait_for(
            lambda: any(
                e["code"] == "OUTPUT_TOO_LARGE" and e["request_id"] == huge.request_id
                for e in errors.values
            ),
            what="the OUTPUT_TOO_LARGE ErrorEvent",
        )
        event = next(e for e in errors.values if e["code"] == "OUTPUT_TOO_LARGE")
        assert event["stage"] == "generation"
        assert str(limit) in event["message"]
        # the session was released: its next request is answered
        nxt = await client.ask("and now briefly", session_id="s5", user_id="u", tenant_id="t")
        assert nxt.state == "COMPLETED"
        assert nxt.content == "A short answer."


async def test_tool_batch_over_the_limit_is_output_too_large(
    settings_factory: Any, server: FakeLLMServer
) -> None:
    # a 64 KiB limit (the setting: Tansu reports none) and 24 calls of ~4 KB: a ~100 KB batch
    settings: Settings = settings_factory(
        kafka={**FAST_KAFKA, "max_message_bytes": 64 * 1024},
        timeouts={"shutdown_grace_s": 2.0},
        llm=_model(server),
        # the batch must reach the size limit, not the cap on calls per turn
        limits={"max_tool_calls_per_turn": 1000},
    )
    await ensure_topics(settings)
    limit = await detect_size_limit(settings)  # a Kafka broker reports its own (1 MiB default)
    codec = AvroCodec()
    pad = json.dumps({"expression": "1+1", "note": "p" * 4000})
    calls = [(f"call_{i}", "calculator", pad) for i in range(limit.max_bytes // 4000 + 8)]
    server.push(Reply(body=openai_completion(None, tool_calls=calls)))
    server.default = Reply(body=openai_completion("Done."))
    async with (
        PipelineWorker(settings) as _,
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.errors, codec, "ErrorEvent") as errors,
        TopicReader(settings, settings.topics.tool_calls) as batches,
    ):
        response = await client.ask("use many tools", session_id="tb", user_id="u", tenant_id="t")
        assert response.state == "ERROR"
        assert response.error_code == "OUTPUT_TOO_LARGE"
        await errors.wait_for(
            lambda: any(e["code"] == "OUTPUT_TOO_LARGE" for e in errors.values),
            what="the OUTPUT_TOO_LARGE ErrorEvent",
        )
        nxt = await client.ask("hello", session_id="tb", user_id="u", tenant_id="t")
        assert nxt.state == "COMPLETED"
        assert batches.records == []  # the batch never went out


async def test_a_record_the_producer_refuses_is_not_retried_and_the_event_ends(
    settings: Settings,
) -> None:
    """The producer's own limit is lower than the runner's (as when the broker's limit is lower
    than the one detected): the refused output is replaced by the event's failure outcome at
    once, and a refused dead letter goes out stripped; every offset is acked."""
    out_topic = settings.topics.responses
    dlq_topic = settings.topics.dlq(settings.topics.generation)
    publisher = Publisher(settings, max_request_size=16 * 1024)
    await publisher.start()
    acked: list[int] = []

    async def handler(msg: Inbound) -> StageResult:
        size = 64 * 1024 if msg.offset in (0, 1) else 10
        return StageResult(records=[Outbound(topic=out_topic, key=b"k", value=b"v" * size)])

    def too_large(msg: Inbound, exc: Exception) -> StageResult | None:
        if msg.offset == 1:
            return None  # not a request: dead-lettered instead
        return StageResult(records=[Outbound(topic=out_topic, key=b"k", value=b"too large")])

    def dead_letter(msg: Inbound, code: str, exc: BaseException, attempt: int) -> StageResult:
        letter = dl.dead_letter(
            replace(msg, value=b"x" * (32 * 1024)),
            dlq_topic=dlq_topic,
            group="g",
            stage="s",
            code=code,
            error=exc,
            attempt=attempt,
        )
        return StageResult(records=[letter])

    runner = StageRunner(
        stage="s",
        handler=handler,
        publish=publisher.publish,
        dead_letter=dead_letter,
        too_large=too_large,
        max_in_flight=10,
        max_record_bytes=1024 * 1024,  # the runner believes the limit is 1 MiB
    )
    try:
        async with (
            TopicReader(settings, out_topic) as out,
            TopicReader(settings, dlq_topic) as dead,
        ):
            for offset in range(3):
                msg = Inbound(
                    topic="in", partition=0, offset=offset, timestamp_ms=0, key=b"k", value=b"x"
                )
                await runner.submit(msg, lambda o=offset: acked.append(o))
            assert await runner.drain(10)
            assert acked == [0, 1, 2]
            assert runner.stats.publish_retries == 0
            await out.wait_for(lambda: len(out.records) == 2, what="2 records")
            assert [r.value for r in out.records] == [b"too large", b"v" * 10]
            await dead.wait_for(lambda: len(dead.records) == 1, what="the stripped dead letter")
            letter = dead.records[0]
            headers = dl.header_map(list(letter.headers))
            assert letter.value == b""
            assert headers[dl.PAYLOAD_OMITTED] == str(32 * 1024)
            assert headers[dl.ERROR_CODE] == "OUTPUT_TOO_LARGE"
            assert headers[dl.ORIGINAL_OFFSET] == "1"
            assert letter.key is None
            assert headers[dl.KEY_OMITTED] == "1"
            assert record_size(replace(letter_out(letter), topic=dlq_topic)) < 16 * 1024
    finally:
        await publisher.stop()


def letter_out(record: Any) -> Outbound:
    return Outbound(topic=record.topic, key=record.key, value=record.value, headers=record.headers)


def test_a_dead_letter_is_shrunk_payload_first_then_headers_then_key() -> None:
    def letter(key: bytes, headers: list[tuple[str, bytes]]) -> Outbound:
        msg = Inbound(
            topic="in",
            partition=3,
            offset=9,
            timestamp_ms=0,
            key=key,
            value=b"v" * 5000,
            headers=headers,
        )
        return dl.dead_letter(
            msg,
            dlq_topic="in.dlq",
            group="g",
            stage="s",
            code="C",
            error=ValueError("e"),
            attempt=1,
        )

    small = letter(b"k", [("h", b"x")])
    assert dl.within_limit(small, 10_000, record_size) is small
    no_payload = dl.within_limit(small, 2000, record_size)
    assert no_payload.value == b""
    assert dl.header_map(no_payload.headers)[dl.PAYLOAD_OMITTED] == "5000"
    assert dl.header_map(no_payload.headers)["h"] == "x"
    big_headers = letter(b"k", [("h", b"x" * 3000)])
    no_headers = dl.within_limit(big_headers, 2000, record_size)
    meta = dl.header_map(no_headers.headers)
    assert "h" not in meta
    assert meta[dl.HEADERS_OMITTED] == "1"
    assert meta[dl.ORIGINAL_OFFSET] == "9"
    assert no_headers.key == b"k"
    big_key = dl.within_limit(letter(b"k" * 3000, []), 2000, record_size)
    assert big_key.key is None
    assert dl.header_map(big_key.headers)[dl.KEY_OMITTED] == "3000"
    assert record_size(big_key) <= 2000


def test_describe_configs_answers_are_read_as_kafka_sends_them() -> None:
    """Entries as a Kafka broker sends them (DescribeConfigs v1+: name, value, read_only,
    source, sensitive, synonyms); a resource with an error is skipped; Tansu sends no entries."""

    class Answer:
        def __init__(self, resources: list[Any]) -> None:
            self.resources = resources

    kafka = Answer(
        [
            (
                0,
                None,
                2,
                "a",
                [(TOPIC_LIMIT, "1048588", False, 5, False, []), ("x", "1", False, 5, False, [])],
            ),
            (0, None, 2, "b", [(TOPIC_LIMIT, "262144", False, 1, False, [])]),
            (3, "unknown topic", 2, "c", []),
        ]
    )
    assert config_values([kafka], TOPIC_LIMIT) == [1048588, 262144]
    assert config_values([kafka], BROKER_LIMIT) == []
    assert config_values([Answer([(0, "No error.", 2, "a", [])])], TOPIC_LIMIT) == []
