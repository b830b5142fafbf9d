"""``agentstream status``, ``health`` and ``top`` against a live pipeline: a worker process, real
requests, a poison record (one dead letter) and a breaker opened in Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from agentstream.cli.main import app
from agentstream.cli.top import collect_frame
from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded.process import free_port
from agentstream.observability.live import TOTAL
from agentstream.resilience.breaker import BreakerConfig, CircuitBreaker
from agentstream.streams.admin import ensure_topics
from agentstream.streams.status import collect_status
from tests.support.kafka import FAST_KAFKA, produce_raw
from tests.support.redis import connect
from tests.support.workers import start_worker, stop_worker, worker_env

pytestmark = pytest.mark.integration


async def ready(url: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    async with httpx.AsyncClient(timeout=2) as http:
        while True:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "worker not ready in time"
            await asyncio.sleep(0.1)


async def open_breaker(settings: Settings, key: str) -> None:
    redis = connect(settings.redis_url or "")
    try:
        breaker = CircuitBreaker(
            redis, key, BreakerConfig(failure_threshold=1), namespace=settings.state.key_prefix
        )
        permit = await breaker.acquire()
        assert await breaker.record(permit, "failure", cause="LLM_TIMEOUT") == "open"
    finally:
        await redis.aclose()


async def test_status_and_top_frame_from_a_live_pipeline(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_worker(settings, {"AGENTSTREAM_METRICS_PORT": str(port)})
    try:
        await ready(url)
        async with AgentClient(settings) as client:
            for i, message in enumerate(("add 2 and 3", "hello", "what time is it")):
                answer = await client.ask(message, session_id=f"s{i}", user_id="u", tenant_id="t")
                assert answer.ok
        await produce_raw(settings, settings.topics.generation, b"not avro", key=b"poison")
        await open_breaker(settings, "llm:flaky")
        dlq = settings.topics.dlq(settings.topics.generation)

        deadline = time.monotonic() + 30
        while True:  # the dead letter and the commits land shortly after the answers
            status = await collect_status(settings, [url])
            settled = status.dead_letters.get(dlq) == 1 and not any(status.lag_by_topic().values())
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert status.problems == []
        assert status.dead_letters[dlq] == 1
        assert status.dead_letters[settings.topics.dlq(settings.topics.requests)] == 0
        stage_topics = {
            settings.topics.requests,
            settings.topics.generation,
            settings.topics.tool_calls,
            settings.topics.feedback,
            settings.topics.approval_decisions,
            settings.topics.delegation_results,
        }
        assert set(status.lag_by_topic()) == stage_topics
        assert status.lag_by_topic() == dict.fromkeys(stage_topics, 0)
        assert len(status.lag) == 6 * settings.topics.partitions
        assert {m.group for m in status.members} == {
            settings.consumer_group,
            f"{settings.consumer_group}.retry",
        }
        assert [(b.key, b.state, b.last_failure) for b in status.open_breakers] == [
            ("llm:flaky", "open", "LLM_TIMEOUT")
        ]
        assert [w.status for w in status.workers] == ["ok"]
        assert set(status.in_flight) == {
            "validation",
            "generation",
            "tools",
            "feedback",
            "approvals",
            "delegation",
            "retry",
        }

        # --- top's data model over the same pipeline
        frame = await collect_frame(settings, 300, [url])
        assert frame.requests == 3
        assert frame.outcomes == {"COMPLETED": 3}
        assert frame.error_codes == {}
        assert frame.throughput_rps == pytest.approx(3 / 300)
        rows = {row.stage: row for row in frame.latency}
        assert set(rows) == {"validation", "generation", "tools", TOTAL}
        assert rows[TOTAL].count == 3
        assert rows["tools"].count >= 1  # "add 2 and 3" and the time question use tools
        assert all(0 <= row.p50_ms <= row.p95_ms for row in frame.latency)
        assert rows[TOTAL].p95_ms >= rows["generation"].p95_ms
        assert frame.breakers == {"llm:flaky": "open"}
        assert frame.lag == dict.fromkeys(stage_topics, 0)
        assert set(frame.in_flight) == {
            "validation",
            "generation",
            "tools",
            "feedback",
            "approvals",
            "delegation",
            "retry",
        }

        # --- the commands themselves (in a thread: they run their own event loop)
        env = {k: v for k, v in worker_env(settings).items() if k.startswith("AGENTSTREAM_")}
        runner = CliRunner()
        for args, expected in (
            (["health", "--url", url], "status: ok"),
            (["status", "--worker", url], "llm:flaky"),
            (["top", "--once", "--window", "300"], "Latency (ms)"),
        ):
            result = await asyncio.to_thread(runner.invoke, app, args, env=env)
            assert result.exit_code == 0, (args, result.output)
            assert expected in result.output
        unreachable = await asyncio.to_thread(
            runner.invoke, app, ["health", "--url", f"127.0.0.1:{free_port()}"], env=env
        )
        assert unreachable.exit_code == 2
    finally:
        stop_worker(proc)
