"""The system under test: a broker, a Redis and three ``agentstream worker`` processes.

Every scenario gets a fresh stack in its own run directory (logs of every process stay there):
Tansu (memory-only) or a three-node Apache Kafka cluster (replication factor 3,
``min.insync.replicas=2``), the embedded Redis (no persistence, so a restart loses everything,
like a Redis without AOF or replicas) and worker processes that die with this one
(``ManagedProcess``: own process group, ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentstream.config import Settings, StateSettings, TopicSettings
from agentstream.embedded import ApacheKafka, EmbeddedKafka, EmbeddedRedis
from agentstream.embedded.process import ManagedProcess, free_port
from agentstream.streams.admin import ensure_topics

BrokerKind = Literal["tansu", "apache-cluster"]

WORKER_START_TIMEOUT_S = 90.0
# Short retry tiers keep a scenario within its time box; the defaults (5 s, 30 s, 300 s) would
# make a run take many minutes after every fault.
RETRY_TIERS_S = (1.0, 3.0, 10.0)


@dataclass(kw_only=True)
class Worker:
    index: int
    process: ManagedProcess
    port: int
    """Its metrics and health port: ready when ``/readyz`` answers 200."""

    @property
    def pid(self) -> int | None:
        return self.process.pid


@dataclass(kw_only=True)
class Stack:
    """One scenario's broker, Redis and workers (use ``async with``)."""

    run_dir: Path
    broker: BrokerKind = "tansu"
    workers: int = 3
    partitions: int = 8
    kafka: EmbeddedKafka | ApacheKafka | None = field(default=None, init=False)
    redis: EmbeddedRedis | None = field(default=None, init=False)
    procs: list[Worker] = field(default_factory=list, init=False)
    background: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    """Tasks a fault left running (a restart); finished or cancelled before the stack stops."""
    _settings: Settings | None = field(default=None, init=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError("the stack has not been started")
        return self._settings

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.broker == "apache-cluster":
            self.kafka = ApacheKafka(run_dir=self.run_dir / "kafka", nodes=3)
        else:
            self.kafka = EmbeddedKafka(run_dir=self.run_dir / "tansu")
        self.redis = EmbeddedRedis(run_dir=self.run_dir / "redis")
        await asyncio.gather(self.kafka.start_async(), self.redis.start_async())
        self._settings = self._build_settings()
        await ensure_topics(self.settings)
        for index in range(self.workers):
            self.spawn_worker(index)
        await asyncio.gather(*(self.wait_worker_ready(w) for w in self.procs))

    async def stop(self) -> None:
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        for worker in self.procs:
            worker.process.terminate()
        await asyncio.gather(*(w.process.stop_async(30.0) for w in self.procs))
        if self.redis is not None:
            await self.redis.stop_async()
        if self.kafka is not None:
            await self.kafka.stop_async()

    # -- workers ------------------------------------------------------------------------------

    def spawn_worker(self, index: int) -> Worker:
        """Start worker process ``index`` (its log: ``worker-<index>.log``); does not wait."""
        port = free_port()
        env = {**self.worker_env(), "AGENTSTREAM_METRICS_PORT": str(port)}
        argv = ["env", *(f"{k}={v}" for k, v in env.items())]
        argv += [sys.executable, "-m", "agentstream.cli", "worker"]
        process = ManagedProcess(
            f"worker-{index}",
            argv,
            log_path=self.run_dir / f"worker-{index}.log",
            cwd=self.run_dir,
        )
        process.spawn()
        worker = Worker(index=index, process=process, port=port)
        self.procs.append(worker)
        return worker

    async def wait_worker_ready(self, worker: Worker) -> None:
        """Until the worker's ``/readyz`` answers 200 (in the group with partitions, Redis up)."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while True:
            if worker.process.returncode is not None:
                raise RuntimeError(
                    f"worker {worker.index} exited with {worker.process.returncode}: "
                    f"{worker.process.log_tail(10)}"
                )
            if await asyncio.to_thread(_ready, worker.port):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.index} not ready in {WORKER_START_TIMEOUT_S}s")
            await asyncio.sleep(0.1)

    def live_workers(self) -> list[Worker]:
        return [w for w in self.procs if w.process.running]

    def worker_env(self) -> dict[str, str]:
        """``AGENTSTREAM_*`` variables that make a worker use this stack's settings."""
        s = self.settings
        env = {
            "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers or "",
            "AGENTSTREAM_REDIS_URL": s.redis_url or "",
            "AGENTSTREAM_CONSUMER_GROUP": s.consumer_group,
            "AGENTSTREAM_STATE__KEY_PREFIX": s.state.key_prefix,
            "AGENTSTREAM_TOPICS__RETRY_TIERS_S": json.dumps(list(s.topics.retry_tiers_s)),
            "AGENTSTREAM_TOPICS__PARTITIONS": str(s.topics.partitions),
            "AGENTSTREAM_TOPICS__REPLICATION_FACTOR": str(s.topics.replication_factor),
            "AGENTSTREAM_LOG_LEVEL": "WARNING",
            "AGENTSTREAM_LOG_FORMAT": "json",
            "AGENTSTREAM_RUN_DIR": str(self.run_dir / "agentstream"),
        }
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        return env

    # -- Redis --------------------------------------------------------------------------------

    async def restart_redis_empty(self, down_s: float) -> None:
        """Stop Redis (its data is gone: no persistence), wait, start a fresh one on the port."""
        assert self.redis is not None
        port = self.redis.port
        await self.redis.stop_async()
        await asyncio.sleep(down_s)
        self.redis = EmbeddedRedis(run_dir=self.run_dir / "redis", port=port)
        await self.redis.start_async()

    def _build_settings(self) -> Settings:
        assert self.kafka is not None
        assert self.redis is not None
        return Settings(
            kafka_bootstrap_servers=self.kafka.address,
            redis_url=self.redis.url,
            consumer_group="chaos",
            log_format="console",
            run_dir=self.run_dir / "agentstream",
            topics=TopicSettings(
                partitions=self.partitions,
                replication_factor=3 if self.broker == "apache-cluster" else 1,
                retry_tiers_s=list(RETRY_TIERS_S),
            ),
            state=StateSettings(key_prefix="chaos"),
        )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1.0) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
