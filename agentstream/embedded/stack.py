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
from typing import Any

from agentstream.config import Settings
from agentstream.embedded.kafka_broker import EmbeddedKafka
from agentstream.embedded.redis_server import EmbeddedRedis
from agentstream.streams.admin import ensure_topics

log = logging.getLogger(__name__)


def default_run_dir(settings: Settings) -> Path:
    """``<settings.run_dir>/run-<YYYYmmdd-HHMMSS>-<pid>``: logs of one stack run."""
    return settings.run_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


class DevStack:
    """Embedded Tansu + Redis for whatever ``settings`` leaves unset."""

    def __init__(
        self, settings: Settings, run_dir: Path | None = None, *, create_topics: bool = True
    ) -> None:
        self.settings = settings
        self.run_dir = (run_dir or default_run_dir(settings)).resolve()
        self.create_topics = create_topics
        self.kafka: EmbeddedKafka | None = None
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
        return [s.pid for s in (self.kafka, self.redis) if s is not None and s.pid is not None]

    async def __aenter__(self) -> Settings:
        updates: dict[str, Any] = {}
        try:
            if self.settings.kafka_bootstrap_servers is None:
                self.kafka = EmbeddedKafka(run_dir=self.run_dir)
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
