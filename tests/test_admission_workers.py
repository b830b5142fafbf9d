"""A user's request limit holds across two ``agentstream worker`` processes: no double allowance."""

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


ADMISSION_ENV = {
    "AGENTSTREAM_ADMISSION__DEFAULTS__USER_REQUESTS": "10",
    "AGENTSTREAM_ADMISSION__DEFAULTS__WINDOW_S": "60",
}


async def test_request_limit_holds_across_two_worker_processes(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    procs = [start_worker(settings, ADMISSION_ENV), start_worker(settings, ADMISSION_ENV)]
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
