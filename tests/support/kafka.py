"""Test helpers that talk to the real broker: raw producing and condition-based collecting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agentstream.config import Settings
from agentstream.schemas.codec import AvroCodec
from agentstream.streams.kafka_config import client_kwargs

FAST_KAFKA = {
    "session_timeout_s": 2.0,
    "heartbeat_interval_s": 0.5,
    "rebalance_timeout_s": 2.0,
    "commit_interval_s": 0.5,
    "fetch_max_wait_ms": 5,
}


async def produce_raw(
    settings: Settings,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()


class TopicReader:
    """Reads a topic from the beginning, keeps every record; waits on conditions with deadlines."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        codec: AvroCodec | None = None,
        schema: str | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.codec = codec
        self.schema = schema
        self.records: list[Any] = []
        self.values: list[dict[str, Any]] = []
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(settings), enable_auto_commit=False, fetch_max_wait_ms=5
        )
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        parts = self._consumer.partitions_for_topic(self.topic)
        if not parts:
            await self._consumer._client.force_metadata_update()
            parts = self._consumer.partitions_for_topic(self.topic)
        assert parts, f"topic {self.topic} missing"
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=100)
            for recs in batches.values():
                for r in recs:
                    self.records.append(r)
                    if self.codec and self.schema:
                        self.values.append(self.codec.decode(self.schema, r.value))

    async def wait_for(
        self, condition: Callable[[], bool], deadline_s: float = 30.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + deadline_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {deadline_s}s waiting for {what}; "
                    f"have {len(self.records)} record(s) on {self.topic}"
                )
            await asyncio.sleep(0.02)
