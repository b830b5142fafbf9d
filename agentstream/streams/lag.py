"""Consumer lag from high-water marks: how many records of a partition the group has not committed.

``lag = high-water mark - committed offset`` (a partition the group never committed counts from
its first offset). The high-water mark is read from a fetch response (``consumer.highwater``),
not from ``end_offsets()``: Tansu answers ListOffsets(latest) with the last batch's base offset
+ 1, which undercounts; every broker reports the high-water mark of a fetch right. So the reader
seeks its own group-less consumer to the end of each partition and waits for a fetch answered
after that. Committed offsets come from the admin client, always for explicit partitions (Tansu
breaks the connection on a group-wide offset request).

The same reader counts dead-letter records (``high-water mark - first offset``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agentstream.config import Settings
from agentstream.streams.kafka_config import client_kwargs

Partition = tuple[str, int]
_POLL_S = 0.01


@dataclass(frozen=True, kw_only=True)
class PartitionLag:
    topic: str
    partition: int
    high_water: int
    committed: int | None
    """The group's committed offset (None: never committed; lag counts from the first offset)."""
    lag: int


class LagReader:
    """Reads high-water marks, first offsets and a group's committed offsets; start, then read."""

    def __init__(self, settings: Settings, *, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        kwargs = client_kwargs(settings)
        self._consumer = AIOKafkaConsumer(
            **kwargs,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=1024,
            client_id="agentstream-lag",
        )
        self._admin = AIOKafkaAdminClient(
            **kwargs,
            client_id="agentstream-lag",
            request_timeout_ms=int(settings.timeouts.kafka_request_s * 1000),
        )
        self._assigned: frozenset[TopicPartition] = frozenset()

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def partitions(self, topics: Iterable[str]) -> list[Partition]:
        """Every partition of those of ``topics`` that exist (never auto-creates a topic)."""
        wanted = set(topics)
        described = await self._admin.describe_topics()  # all topics: names none
        return sorted(
            (t["topic"], p["partition"])
            for t in described
            if t["topic"] in wanted and t.get("error_code", 0) == 0
            for p in t["partitions"]
        )

    async def high_watermarks(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The high-water mark of each partition, from a fetch answered after this call began
        (partitions whose fetch did not come back within ``timeout_s`` are left out)."""
        tps = frozenset(TopicPartition(t, p) for t, p in partitions)
        if not tps:
            return {}
        if tps != self._assigned:
            self._consumer.assign(list(tps))
            self._assigned = tps
        # fetching only while reading: between reads the partitions are paused (no idle polling)
        self._consumer.resume(*tps)
        try:
            await self._consumer.seek_to_end(*tps)
            return await self._fresh_high_watermarks(tps, int(time.time() * 1000))
        finally:
            self._consumer.pause(*tps)

    async def _fresh_high_watermarks(
        self, tps: frozenset[TopicPartition], since_ms: int
    ) -> dict[Partition, int]:
        deadline = time.monotonic() + self.timeout_s
        fresh: dict[Partition, int] = {}
        while True:
            for tp in tps:
                polled = self._consumer.last_poll_timestamp(tp)
                if polled is not None and polled >= since_ms:
                    fresh[(tp.topic, tp.partition)] = int(self._consumer.highwater(tp))
            if len(fresh) == len(tps) or time.monotonic() > deadline:
                return fresh
            fresh.clear()
            await asyncio.sleep(_POLL_S)

    async def first_offsets(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return {}
        found = await self._consumer.beginning_offsets(tps)
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    async def committed(self, group: str, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """The group's committed offsets (partitions it never committed are left out)."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        if not tps:
            return {}
        offsets: dict[Any, Any] = await self._admin.list_consumer_group_offsets(
            group, partitions=tps
        )
        return {
            (tp.topic, tp.partition): int(meta.offset)
            for tp, meta in offsets.items()
            if meta is not None and meta.offset >= 0
        }

    async def lag(self, group: str, partitions: Iterable[Partition]) -> list[PartitionLag]:
        """Lag of ``group`` on each of ``partitions`` whose high-water mark could be read."""
        wanted = sorted(set(partitions))
        high = await self.high_watermarks(wanted)
        committed = await self.committed(group, high)
        never = [tp for tp in high if tp not in committed]
        first = await self.first_offsets(never)
        result = []
        for tp in wanted:
            if tp not in high:
                continue
            done = committed.get(tp)
            base = done if done is not None else first.get(tp, 0)
            result.append(
                PartitionLag(
                    topic=tp[0],
                    partition=tp[1],
                    high_water=high[tp],
                    committed=done,
                    lag=max(0, high[tp] - base),
                )
            )
        return result

    async def record_counts(self, partitions: Iterable[Partition]) -> dict[Partition, int]:
        """Records each partition holds (high-water mark minus first offset)."""
        high = await self.high_watermarks(partitions)
        first = await self.first_offsets(high)
        return {tp: max(0, hw - first.get(tp, 0)) for tp, hw in high.items()}
