"""A user's request limit holds across two ``agentstream worker`` processes: no double allowance."""

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
            "AGENTSTREAM_ADMISSION__DEFAULTS__USER_REQUESTS": "10",
            "AGENTSTREAM_ADMISSION__DEFAULTS__WINDOW_S": "60",
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


async def test_request_limit_holds_across_two_worker_processes(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    procs = [start_worker(settings), start_worker(settings)]
    try:
        async with AgentClient(settings) as client:
            # Both members must have joined before the limited work arrives: warm up with many
            # users (1 request each, far below their limit) until both workers have answered.
            workers: set[str] = set()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            n = 0
            while len(workers) < 2:
                assert loop.time() < deadline, "second worker never took work"
                assert all(p.poll() is None for p in procs), "a worker died"
                warmup = await asyncio.gather(
                    *(
                        client.ask("hi", session_id=f"w{n}-{i}", user_id=f"w{n}-{i}", tenant_id="t")
                        for i in range(16)
                    )
                )
                workers |= {r.metadata["worker"] for r in warmup}
                n += 1

            # 40 requests of one user on 40 sessions (so both workers validate some) at once
            requests = [
                new_request(f"add {i} and 1", session_id=f"s{i}", user_id="limited", tenant_id="t")
                for i in range(40)
            ]
            answers = await asyncio.gather(*(client.request(r, timeout=60) for r in requests))
    finally:
        for proc in procs:
            stop_worker(proc)
    admitted = [a for a in answers if a.state == "COMPLETED"]
    limited = [a for a in answers if a.error_code == "RATE_LIMITED"]
    assert len(admitted) == 10
    assert len(limited) == 30
    assert all(0 < float(a.metadata["retry_after_s"]) <= 60 for a in limited)
    # both processes made refusals (each validates more than 10 of these 40 sessions: murmur2
    # puts 14/10/8/8 of them on the 4 partitions, and each worker owns 2 partitions)
    assert len({a.metadata["worker"] for a in limited}) == 2
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
