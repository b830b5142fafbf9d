"""Two ``agentstream worker`` processes in one consumer group share the partitions."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.streams.admin import ensure_topics
from tests.support.kafka import FAST_KAFKA

pytestmark = pytest.mark.integration


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "AGENTSTREAM_REDIS_URL": settings.redis_url or "",
            "AGENTSTREAM_CONSUMER_GROUP": settings.consumer_group,
            "AGENTSTREAM_STATE__KEY_PREFIX": settings.state.key_prefix,
            "AGENTSTREAM_LOG_LEVEL": "WARNING",
        }
    )
    for name in ("requests", "generation", "tool_calls", "responses", "errors", "metrics"):
        env[f"AGENTSTREAM_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    for key, value in FAST_KAFKA.items():
        env[f"AGENTSTREAM_KAFKA__{key.upper()}"] = str(value)
    return env


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "agentstream.cli", "worker"],
        env=worker_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_two_worker_processes_share_the_work(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    procs = [start_worker(settings), start_worker(settings)]
    try:
        async with AgentClient(settings) as client:
            # Both members must have joined before the work arrives: keep asking until two
            # different workers have answered (each answer names the worker that produced it).
            workers: set[str] = set()
            n = 0
            deadline = asyncio.get_running_loop().time() + 60
            while len(workers) < 2:
                assert asyncio.get_running_loop().time() < deadline, "second worker never took work"
                assert all(p.poll() is None for p in procs), "a worker died"
                warmup = await asyncio.gather(
                    *(
                        client.ask("hello", session_id=f"warm{n}-{i}", user_id="u", tenant_id="t")
                        for i in range(16)
                    )
                )
                workers |= {r.metadata["worker"] for r in warmup}
                n += 1
            requests = [
                new_request(f"add {i} and 1", session_id=f"s{i % 16}", user_id="u", tenant_id="t")
                for i in range(100)
            ]
            answers = await asyncio.gather(*(client.request(r, timeout=60) for r in requests))
        assert [a.content for a in answers] == [f"The answer is {i + 1}." for i in range(100)]
        assert len({a.metadata["worker"] for a in answers}) == 2
        assert {a.metadata["worker"].split(":")[1] for a in answers} == {str(p.pid) for p in procs}
    finally:
        for proc in procs:
            stop_worker(proc)
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
