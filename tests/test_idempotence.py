"""Producers are idempotent exactly where the broker grants producer ids (Apache Kafka)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded import EmbeddedKafka
from agentstream.processors.base import Outbound
from agentstream.streams.idempotence import idempotence_supported
from agentstream.streams.publisher import Publisher
from tests.support.kafka import TopicReader

pytestmark = pytest.mark.integration


def _granted(kafka_kind: str) -> bool:
    return kafka_kind != "tansu"  # Apache Kafka (embedded, container or external) grants ids


async def test_detection_matches_the_session_broker(
    pipeline_settings: Settings, kafka_kind: str
) -> None:
    assert await idempotence_supported(pipeline_settings) is _granted(kafka_kind)


async def test_tansu_is_detected_as_refusing(tmp_path: Path) -> None:
    with EmbeddedKafka(run_dir=tmp_path / "tansu") as tansu:
        settings = Settings(kafka_bootstrap_servers=tansu.address, run_dir=tmp_path)
        assert await idempotence_supported(settings) is False


async def test_publisher_and_client_produce_with_what_the_broker_grants(
    pipeline_settings: Settings, kafka_kind: str
) -> None:
    topic = pipeline_settings.topics.metrics
    publisher = Publisher(pipeline_settings)
    await publisher.start()
    try:
        assert publisher.idempotent is _granted(kafka_kind)
        records = [Outbound(topic=topic, key=b"s1", value=f"v{i}".encode()) for i in range(20)]
        async with TopicReader(pipeline_settings, topic) as reader:
            await publisher.publish(records)
            await reader.wait_for(lambda: len(reader.records) >= 20, what="20 records")
        assert [r.value for r in reader.records] == [f"v{i}".encode() for i in range(20)]
    finally:
        await publisher.stop()
    async with AgentClient(pipeline_settings) as client:
        assert client.idempotent is _granted(kafka_kind)
