"""Two ``agentstream worker`` processes in one consumer group share the partitions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.streams.admin import ensure_topics
from tests.support.kafka import FAST_KAFKA
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.integration


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
