"""``dlq list|show|replay`` on the real broker: dead letters built with the project's convention
(``dead_letter(...)``), replayed through the library function and once through the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from agentstream.config import Settings
from agentstream.llm.exceptions import LLMServerError
from agentstream.processors.base import Inbound
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.dead_letter import REPLAYED_FROM
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.replay import (
    REPLAY_ID,
    DlqReader,
    ReplayError,
    ReplayFilter,
    dlq_topics,
    replay,
    summarize,
)
from tests.support.kafka import FAST_KAFKA, TopicReader, produce_raw
from tests.support.workers import worker_env

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Letter:
    session: str
    tenant: str
    code: str
    error: Exception
    decodable: bool = True


LETTERS = [
    Letter("s1", "acme", "LLM_SERVER_ERROR", LLMServerError("openai: HTTP 500")),
    Letter("s2", "acme", "LLM_SERVER_ERROR", LLMServerError("openai: HTTP 502")),
    Letter("s3", "acme", "LLM_SERVER_ERROR", LLMServerError("openai: HTTP 503")),
    Letter("s1", "globex", "INTERNAL_ERROR", RuntimeError("bug")),
    Letter("s4", "globex", "INTERNAL_ERROR", RuntimeError("bug")),
    Letter("s5", "?", "UNDECODABLE", SerializationError("bad magic byte"), decodable=False),
]


def request_value(codec: AvroCodec, letter: Letter, i: int) -> bytes:
    if not letter.decodable:
        return b"not avro at all"
    return codec.encode(
        "AgentRequest",
        {
            "request_id": f"r{i}",
            "session_id": letter.session,
            "user_id": "u",
            "tenant_id": letter.tenant,
            "message": f"hello {i}",
            "allowed_tools": [],
            "metadata": {},
            "created_at": datetime.now(UTC),
            "deadline": None,
        },
    )


@pytest.fixture
async def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(s)
    await ensure_topics(s, [target_topic(s)])
    return s


def target_topic(settings: Settings) -> str:
    return f"{settings.topics.requests}.replayed"


async def produce_letters(settings: Settings, letters: list[Letter] = LETTERS) -> list[bytes]:
    """Dead-letter each letter as the validation stage would; returns the original values."""
    codec = AvroCodec()
    topics = settings.topics
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    values = []
    try:
        for i, letter in enumerate(letters):
            value = request_value(codec, letter, i)
            values.append(value)
            original = Inbound(
                topic=topics.requests,
                partition=i % 4,
                offset=100 + i,
                timestamp_ms=int(time.time() * 1000),
                key=letter.session.encode(),
                value=value,
                headers=[("trace", f"t{i}".encode())],
            )
            out = dl.dead_letter(
                original,
                dlq_topic=topics.dlq(topics.requests),
                group=settings.consumer_group,
                stage="validation",
                code=letter.code,
                error=letter.error,
                attempt=3,
            )
            await producer.send_and_wait(out.topic, out.value, key=out.key, headers=out.headers)
        out = dl.dead_letter(
            Inbound(
                topic=topics.generation, partition=0, offset=7, timestamp_ms=0, key=b"g", value=b"x"
            ),
            dlq_topic=topics.dlq(topics.generation),
            group=settings.consumer_group,
            stage="generation",
            code="LLM_TIMEOUT",
            error=TimeoutError("slow"),
            attempt=1,
        )
        await producer.send_and_wait(out.topic, out.value, key=out.key, headers=out.headers)
    finally:
        await producer.stop()
    return values


async def read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its high-water mark (a bounded read, no waiting)."""
    async with DlqReader(settings, topic) as reader:
        return [r async for r in reader.records()]


async def test_list_counts_with_breakdown(settings: Settings) -> None:
    await produce_letters(settings)
    topics = settings.topics
    dlq_req, dlq_gen = topics.dlq(topics.requests), topics.dlq(topics.generation)
    assert {dlq_req, dlq_gen} <= set(await dlq_topics(settings))
    req, gen = await summarize(settings, [dlq_req, dlq_gen])
    assert (req.topic, req.records, gen.records) == (dlq_req, 6, 1)
    assert req.by_code == {"LLM_SERVER_ERROR": 3, "INTERNAL_ERROR": 2, "UNDECODABLE": 1}
    assert req.by_class == {"LLMServerError": 3, "RuntimeError": 2, "SerializationError": 1}
    assert req.by_origin == {topics.requests: 6}
    assert gen.by_code == {"LLM_TIMEOUT": 1}
    with pytest.raises(ReplayError):
        await summarize(settings, [f"{dlq_req}.nope"])


async def test_replay_everything_to_the_original_topic(settings: Settings) -> None:
    values = await produce_letters(settings)
    topics = settings.topics
    dlq_topic = topics.dlq(topics.requests)
    summary = await replay(settings, dlq_topic, AvroCodec(), replay_id="run-1", force=True)
    assert (summary.scanned, summary.matched, summary.replayed) == (6, 6, 6)
    assert summary.by_target == {topics.requests: 6}
    assert not summary.refused
    landed = await read_all(settings, topics.requests)
    assert sorted(r.value for r in landed) == sorted(values)
    dead = {r.value: r for r in await read_all(settings, dlq_topic)}
    for record in landed:
        headers = dict(record.headers)
        assert not any(k.startswith("kafka_dlt-") for k in headers)
        assert dl.ERROR_CODE not in headers
        assert dl.ATTEMPT not in headers
        assert headers[REPLAY_ID] == b"run-1"
        source = dead[record.value]
        source_headers = dl.header_map(list(source.headers))
        assert headers[dl.REPLAYED_CODE].decode() == source_headers[dl.ERROR_CODE]
        original = "/".join(
            source_headers[h]
            for h in (dl.ORIGINAL_TOPIC, dl.ORIGINAL_PARTITION, dl.ORIGINAL_OFFSET)
        )
        assert headers[dl.FIRST_POSITION].decode() == original  # dedupe sees a redelivery
        assert headers[REPLAYED_FROM].decode() == source.position
        assert record.key == source.key  # same key, so the same session partition
        assert headers["trace"] == dict(source.headers)["trace"]


async def test_records_that_can_only_fail_again_are_refused_unless_forced(
    settings: Settings,
) -> None:
    await produce_letters(settings)
    target = target_topic(settings)
    dlq_topic = settings.topics.dlq(settings.topics.requests)
    summary = await replay(settings, dlq_topic, AvroCodec(), to=target)
    assert (summary.matched, summary.replayed) == (6, 5)
    assert summary.refused == {"UNDECODABLE": 1}
    assert b"not avro at all" not in {r.value for r in await read_all(settings, target)}
    forced = await replay(
        settings, dlq_topic, AvroCodec(), to=target, filter_=_undecodable(), force=True
    )
    assert (forced.replayed, forced.refused) == (1, {})


def _undecodable() -> ReplayFilter:
    return ReplayFilter(error_codes=frozenset({"UNDECODABLE"}))


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (ReplayFilter(error_codes=frozenset({"INTERNAL_ERROR"})), {"s1", "s4"}),
        (ReplayFilter(error_classes=frozenset({"LLMServerError"})), {"s1", "s2", "s3"}),
        (
            ReplayFilter(error_classes=frozenset({"agentstream.llm.exceptions.LLMServerError"})),
            {"s1", "s2", "s3"},
        ),
        (ReplayFilter(sessions=frozenset({"s1"})), {"s1"}),
        (ReplayFilter(tenants=frozenset({"globex"})), {"s1", "s4"}),
        (
            ReplayFilter(tenants=frozenset({"acme"}), sessions=frozenset({"s2", "s4"})),
            {"s2"},
        ),
        (ReplayFilter(since_ms=int(time.time() * 1000) + 3_600_000), set()),
        (ReplayFilter(until_ms=int(time.time() * 1000) - 3_600_000), set()),
    ],
)
async def test_filters(settings: Settings, filter_: ReplayFilter, expected: set[str]) -> None:
    await produce_letters(settings)
    target = target_topic(settings)
    dlq_topic = settings.topics.dlq(settings.topics.requests)
    summary = await replay(settings, dlq_topic, AvroCodec(), to=target, filter_=filter_)
    landed = await read_all(settings, target)
    assert {r.key.decode() for r in landed} == expected
    assert summary.replayed == len(landed)
    assert summary.scanned == 6
    assert summary.filtered_out == 6 - summary.matched


async def test_time_window_around_now(settings: Settings) -> None:
    before = int(time.time() * 1000) - 1
    await produce_letters(settings)
    after = int(time.time() * 1000) + 1
    window = ReplayFilter(since_ms=before, until_ms=after)
    summary = await replay(
        settings,
        settings.topics.dlq(settings.topics.requests),
        AvroCodec(),
        dry_run=True,
        filter_=window,
    )
    assert summary.matched == 6


async def test_dry_run_sends_nothing(settings: Settings) -> None:
    await produce_letters(settings)
    target = target_topic(settings)
    summary = await replay(
        settings,
        settings.topics.dlq(settings.topics.requests),
        AvroCodec(),
        to=target,
        dry_run=True,
    )
    assert summary.dry_run
    assert summary.matched == 6
    assert summary.replayed == 0
    assert summary.by_target == {target: 5}  # the UNDECODABLE record would be refused
    assert summary.refused == {"UNDECODABLE": 1}
    (counted,) = await summarize(settings, [target])
    assert counted.records == 0


async def test_rate_limit_paces_the_sends(settings: Settings) -> None:
    await produce_letters(settings)
    target = target_topic(settings)
    started = time.monotonic()
    summary = await replay(
        settings, settings.topics.dlq(settings.topics.requests), AvroCodec(), to=target, rate=20.0
    )
    assert summary.replayed == 5
    assert time.monotonic() - started >= 4 / 20.0
    assert len(await read_all(settings, target)) == 5


async def test_missing_topics_are_errors(settings: Settings) -> None:
    dlq_topic = settings.topics.dlq(settings.topics.requests)
    with pytest.raises(ReplayError, match="does not exist"):
        await replay(settings, dlq_topic, AvroCodec(), to="no.such.topic.anywhere")
    with pytest.raises(ReplayError, match="does not exist"):
        await replay(settings, "no.such.dlq", AvroCodec())


async def test_empty_dlq(settings: Settings) -> None:
    summary = await replay(settings, settings.topics.dlq(settings.topics.tool_calls), AvroCodec())
    assert (summary.scanned, summary.replayed) == (0, 0)


async def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentstream.cli", "dlq", *args],
        env={**worker_env(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_cli_list_show_and_replay(settings: Settings) -> None:
    await produce_letters(settings)
    dlq_topic = settings.topics.dlq(settings.topics.requests)
    target = target_topic(settings)

    listed = await run_cli(settings, "list", "--topic", dlq_topic)
    assert listed.returncode == 0, listed.stderr
    assert dlq_topic in listed.stdout
    assert "LLM_SERVER_ERROR 3" in listed.stdout

    shown = await run_cli(settings, "show", dlq_topic, "--tenant", "globex", "--max", "5")
    assert shown.returncode == 0, shown.stderr
    lines = [json.loads(line) for line in shown.stdout.strip().splitlines()]
    assert [line["value"]["tenant_id"] for line in lines] == ["globex", "globex"]
    assert all(line["headers"][dl.ORIGINAL_TOPIC] == settings.topics.requests for line in lines)
    undecodable = await run_cli(settings, "show", dlq_topic, "-c", "UNDECODABLE")
    assert json.loads(undecodable.stdout)["undecodable"]

    dry = await run_cli(settings, "replay", dlq_topic, "--to", target, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout
    assert "would replay" in dry.stdout
    assert "refused UNDECODABLE" in dry.stdout
    assert (await summarize(settings, [target]))[0].records == 0

    done = await run_cli(
        settings,
        "replay",
        dlq_topic,
        "--to",
        target,
        "--error-code",
        "LLM_SERVER_ERROR",
        "--since",
        "1h",
        "--rate",
        "100",
        "--id",
        "cli-run",
    )
    assert done.returncode == 0, done.stderr
    assert "Replay summary" in done.stdout
    assert "cli-run" in done.stdout
    landed = await read_all(settings, target)
    assert sorted(r.key for r in landed) == [b"s1", b"s2", b"s3"]
    assert all(dict(r.headers)[REPLAY_ID] == b"cli-run" for r in landed)

    missing = await run_cli(settings, "replay", dlq_topic, "--to", "no.such.topic.anywhere")
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr


async def test_a_forced_replay_that_fails_again_adds_no_second_dead_letter(
    settings: Settings,
) -> None:
    codec = AvroCodec()
    t = settings.topics
    dlq_topic = t.dlq(t.requests)
    async with (
        PipelineWorker(settings) as _,
        TopicReader(settings, dlq_topic) as dead,
        TopicReader(settings, t.errors, codec, "ErrorEvent") as errors,
    ):
        await produce_raw(settings, t.requests, b"not avro at all", key=b"bad")
        await dead.wait_for(lambda: len(dead.records) == 1, what="the first dead letter")
        summary = await replay(settings, dlq_topic, codec, force=True)
        assert summary.replayed == 1
        # a sentinel on the same key (same partitions, processed after the replayed copy)
        await produce_raw(settings, t.requests, b"also not avro", key=b"bad")
        await dead.wait_for(lambda: len(dead.records) == 2, what="the sentinel's dead letter")
        await errors.wait_for(lambda: len(errors.values) == 3, what="an error event per failure")
    first, second = (dict(r.headers) for r in dead.records)
    assert REPLAYED_FROM not in first
    assert REPLAYED_FROM not in second  # no dead letter for the replayed copy
    assert dead.records[1].value == b"also not avro"
    assert [e["code"] for e in errors.values] == ["UNDECODABLE"] * 3
