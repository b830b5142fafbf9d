"""An Avro AgentRequest survives a trip through a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from agentstream.schemas.codec import AvroCodec

pytestmark = pytest.mark.integration


async def test_agent_request_round_trip(kafka_bootstrap: str) -> None:
    topic = f"test.avro.{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    codec = AvroCodec()
    now = datetime.now(UTC).replace(microsecond=0)
    request_id = str(uuid.uuid4())
    request = {
        "request_id": request_id,
        "session_id": "sess-kafka",
        "user_id": "user-1",
        "tenant_id": "acme",
        "message": "Wie spät ist es? ⏰",
        "allowed_tools": ["clock"],
        "metadata": {"channel": "test"},
        "created_at": now,
        "deadline": now + timedelta(seconds=30),
        "previous_response_id": str(uuid.uuid4()),
        "agent": "support",
    }
    payload = codec.encode("AgentRequest", request)

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, payload, key=request_id.encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        message = await asyncio.wait_for(consumer.getone(), timeout=20)
    finally:
        await consumer.stop()

    assert message.value == payload
    assert message.key == request_id.encode()
    assert codec.decode("AgentRequest", message.value) == request
