"""The development stack: start a broker and/or Redis only where the settings name none.

::

    async with DevStack(settings) as live:      # live: Settings with both addresses filled in
        ...                                     # topics exist (ensure_topics)

Both children are stopped on exit, also when start-up fails half-way.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from agentstream.config import Settings
from agentstream.embedded.apache_kafka import ApacheKafka
from agentstream.embedded.kafka_broker import EmbeddedKafka
from agentstream.embedded.redis_server import EmbeddedRedis
from agentstream.streams.admin import ensure_topics

log = logging.getLogger(__name__)

BrokerKind = Literal["tansu", "apache-kafka"]
BROKER_KINDS: tuple[BrokerKind, ...] = ("tansu", "apache-kafka")


def default_run_dir(settings: Settings) -> Path:
    """``<settings.run_dir>/run-<YYYYmmdd-HHMMSS>-<pid>``: logs of one stack run."""
    return settings.run_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class DevStack:
    """Embedded broker (Tansu, or Apache Kafka) + Redis for whatever ``settings`` leaves unset."""

    def __init__(
        self,
        settings: Settings,
        run_dir: Path | None = None,
        *,
        create_topics: bool = True,
        broker: BrokerKind = "tansu",
    ) -> None:
        self.settings = settings
        self.run_dir = (run_dir or default_run_dir(settings)).resolve()
        self.create_topics = create_topics
        self.broker = broker
        self.kafka: EmbeddedKafka | ApacheKafka | None = None
        self.redis: EmbeddedRedis | None = None
        self.created_topics: list[str] = []

    @property
    def kafka_started(self) -> bool:
        return self.kafka is not None

    @property
    def redis_started(self) -> bool:
        return self.redis is not None

    @property
    def pids(self) -> list[int]:
        pids = [] if self.kafka is None else self._kafka_pids(self.kafka)
        if self.redis is not None and self.redis.pid is not None:
            pids.append(self.redis.pid)
        return pids

    @staticmethod
    def _kafka_pids(kafka: EmbeddedKafka | ApacheKafka) -> list[int]:
        if isinstance(kafka, ApacheKafka):
            return kafka.pids
        return [] if kafka.pid is None else [kafka.pid]

    async def __aenter__(self) -> Settings:
        updates: dict[str, Any] = {}
        try:
            if self.settings.kafka_bootstrap_servers is None:
                self.kafka = (
                    ApacheKafka(run_dir=self.run_dir)
                    if self.broker == "apache-kafka"
                    else EmbeddedKafka(run_dir=self.run_dir)
                )
                await self.kafka.start_async()
                updates["kafka_bootstrap_servers"] = self.kafka.address
            if self.settings.redis_url is None:
                self.redis = EmbeddedRedis(run_dir=self.run_dir)
                await self.redis.start_async()
                updates["redis_url"] = self.redis.url
            live = self.settings.model_copy(update=updates)
            if self.create_topics:
                self.created_topics = await ensure_topics(live)
        except BaseException:
            await self.stop()
            raise
        self.settings = live
        return live

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop what this stack started (Redis first, then the broker). Idempotent."""
        for server in (self.redis, self.kafka):
            if server is not None:
                await server.stop_async()
