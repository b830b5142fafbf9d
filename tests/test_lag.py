"""Consumer lag from fetch high-water marks (right on Tansu, whose end_offsets() undercounts)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.config import Settings
from agentstream.streams.admin import ensure_topics
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.lag import LagReader

pytestmark = pytest.mark.integration


async def produce_batched(settings: Settings, topic: str, per_partition: dict[int, int]) -> None:
    """Records sent together, so the broker stores multi-record batches."""
    producer = AIOKafkaProducer(**client_kwargs(settings), linger_ms=50)
    await producer.start()
    try:
        sent = [
            await producer.send(topic, b"v", partition=partition)
            for partition, count in per_partition.items()
            for _ in range(count)
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def commit_after(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in offsets])
        await consumer.commit({TopicPartition(topic, p): o for p, o in offsets.items()})
    finally:
        await consumer.stop()


async def test_lag_is_high_water_mark_minus_committed(settings_factory: Any) -> None:
    settings: Settings = settings_factory(topics={"partitions": 2})
    topic = settings.topics.generation
    await ensure_topics(settings, [topic])
    await produce_batched(settings, topic, {0: 13, 1: 12})
    group = f"{settings.consumer_group}-lag"

    async with LagReader(settings) as reader:
        parts = await reader.partitions([topic, f"{topic}.does-not-exist"])
        assert parts == [(topic, 0), (topic, 1)]  # and nothing was auto-created
        assert await reader.high_watermarks(parts) == {(topic, 0): 13, (topic, 1): 12}
        assert await reader.record_counts(parts) == {(topic, 0): 13, (topic, 1): 12}

        never = await reader.lag(group, parts)  # never committed: counted from the start
        assert [(x.lag, x.committed) for x in never] == [(13, None), (12, None)]

        await commit_after(settings, group, topic, {0: 3, 1: 12})
        lag = await reader.lag(group, parts)
        assert [(x.partition, x.high_water, x.committed, x.lag) for x in lag] == [
            (0, 13, 3, 10),
            (1, 12, 12, 0),
        ]

        await produce_batched(settings, topic, {1: 5})  # a later read sees new records
        assert [x.lag for x in await reader.lag(group, parts)] == [10, 5]
