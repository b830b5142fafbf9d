"""Every partition of a topic, for consumers that read without a group (clients, the control
listener, tail, replay).

``partitions_for_topic`` reads the consumer's cached metadata, which holds only the topics the
client has asked about; ``consumer.topics()`` fetches metadata into a separate object and leaves
that cache as it was (on Apache Kafka the cache then knows no topic; Tansu happened to fill it).
So a topic missing from the cache gets one forced metadata update before it counts as absent.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition


async def all_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` (a started consumer), sorted; empty if there is no topic."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(parts or ())]
