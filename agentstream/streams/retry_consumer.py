"""The retry forwarder's own consumer.

Retry topics are consumed by a plain aiokafka consumer in a group of their own
(``<consumer_group>.retry``), not by the Faust app that carries the stage topics: records there
are held for seconds to minutes, and keeping those partitions out of the hot path's fetches keeps
every hop of a live request small (measured: about 2 ms of a request's latency on the embedded
broker). The same key-ordered runner holds each record until due; offsets are committed only
through the runner's in-order acks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from agentstream.config import Settings
from agentstream.observability.logging import get_logger
from agentstream.processors.base import Inbound
from agentstream.streams.consumer_stop import stop_consumer
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.runner import StageRunner
from agentstream.streams.topology import retry_topics

log = get_logger(__name__)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: RetryConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._owner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


class RetryConsumer:
    def __init__(self, settings: Settings, runner: StageRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.topics = retry_topics(settings)
        longest_hold_ms = int(max(settings.topics.retry_tiers_s or [0]) * 1000)
        k = settings.kafka
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            group_id=f"{settings.consumer_group}.retry",
            enable_auto_commit=False,
            auto_offset_reset=k.auto_offset_reset,
            session_timeout_ms=int(k.session_timeout_s * 1000),
            heartbeat_interval_ms=int(k.heartbeat_interval_s * 1000),
            rebalance_timeout_ms=int(k.rebalance_timeout_s * 1000),
            # a full runner stops polling while records wait for their due time
            max_poll_interval_ms=2 * longest_hold_ms + 300_000,
            fetch_max_wait_ms=max(k.fetch_max_wait_ms, 50),
        )
        self._done: dict[TopicPartition, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self.topics, listener=_Rebalance(self))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._consume()), loop.create_task(self._commit_loop())]

    async def _consume(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batches.items():
                for record in records:
                    await self.runner.submit(
                        _inbound(record), _acker(self._done, tp, record.offset)
                    )

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.kafka.commit_interval_s)
            await self._commit()

    async def _commit(self) -> None:
        if not self._done:
            return
        offsets, self._done = self._done, {}
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - not committed: redelivered, which is safe
            log.warning("retry offsets not committed", error=type(exc).__name__)

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        grace = min(
            self.settings.timeouts.shutdown_grace_s, 0.8 * self.settings.kafka.rebalance_timeout_s
        )
        await self.runner.revoke({(tp.topic, tp.partition) for tp in revoked}, grace)
        await self._commit()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._commit()
        await stop_consumer(self._consumer, name="retry")


def _acker(done: dict[TopicPartition, int], tp: TopicPartition, offset: int) -> Any:
    def ack() -> None:
        done[tp] = offset + 1

    return ack


def _inbound(record: Any) -> Inbound:
    return Inbound(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=record.value or b"",
        headers=[(k, v or b"") for k, v in (record.headers or ())],
    )
