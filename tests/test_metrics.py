"""Prometheus metrics: a worker process serves /metrics with stage and request counters."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded.process import free_port
from agentstream.streams.admin import ensure_topics
from tests.support.kafka import FAST_KAFKA
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.integration


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0.0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and line.split("}")[0][len(name) + 1 :] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_worker_serves_metrics(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    port = free_port()
    proc = start_worker(settings, {"AGENTSTREAM_METRICS_PORT": str(port)})
    try:
        async with AgentClient(settings) as client, httpx.AsyncClient() as http:
            answer = await client.ask("add 2 and 3", session_id="m", user_id="u", tenant_id="t")
            assert answer.ok
            deadline = time.monotonic() + 10
            while True:  # counters are bumped after the response is published
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                done = sample(
                    text, "agentstream_requests_finished_total", state="COMPLETED", code=""
                )
                if done >= 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop_worker(proc)
    assert done == 1
    for stage in ("validation", "generation", "tools"):
        assert sample(text, "agentstream_stage_events_total", stage=stage, outcome="processed") >= 1
    assert "agentstream_stage_handler_seconds_bucket" in text
    assert "2 and 3" not in text  # labels never carry request content
