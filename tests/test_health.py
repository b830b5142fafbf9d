"""Health endpoints of a worker process on its metrics port: /livez, /readyz, /healthz, /metrics,
404 elsewhere; readiness follows Redis (a Redis this test starts, stops and starts again)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.embedded import EmbeddedRedis
from agentstream.embedded.process import free_port
from agentstream.state.probe import RedisProbe
from agentstream.streams.admin import ensure_topics
from tests.support.kafka import FAST_KAFKA
from tests.support.redis import connect
from tests.support.wait import wait_until
from tests.support.workers import start_worker, stop_worker

pytestmark = pytest.mark.integration

FAST_HEALTH = {
    "AGENTSTREAM_HEALTH__PROBE_INTERVAL_S": "0.2",
    "AGENTSTREAM_HEALTH__REDIS_TIMEOUT_S": "0.5",
    "AGENTSTREAM_HEALTH__LAG_INTERVAL_S": "0.5",
}


async def test_probes_follow_redis_and_other_paths_are_404(
    settings_factory: Any, own_redis: EmbeddedRedis
) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, redis_url=own_redis.url)
    await ensure_topics(settings)
    port = free_port()
    proc = start_worker(settings, {"AGENTSTREAM_METRICS_PORT": str(port), **FAST_HEALTH})
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            last: dict[str, str] = {}

            async def answers(path: str, code: int) -> bool:
                try:
                    response = await http.get(path)
                except httpx.TransportError as exc:
                    last[path] = repr(exc)
                    return False
                last[path] = response.text
                return response.status_code == code

            await wait_until(
                lambda: answers("/readyz", 200), "the worker to be ready", deadline_s=60, seen=last
            )
            assert (await http.get("/livez")).json() == {"ok": True, "reasons": []}
            assert (await http.get("/nope")).status_code == 404
            assert (await http.get("/")).status_code == 404
            metrics_page = await http.get("/metrics")
            assert metrics_page.status_code == 200
            assert "agentstream_stage_in_flight" in metrics_page.text

            report = (await http.get("/healthz")).json()
            assert report["status"] == "ok"
            components = report["components"]
            assert components["redis"]["ok"] is True
            assert components["kafka"]["assigned"], "a ready worker has partitions"
            assert set(components["in_flight"]) == {
                "validation",
                "generation",
                "tools",
                "feedback",
                "approvals",
                "delegation",
                "retry",
            }
            assert components["models"]["default"] == "local"

            async with AgentClient(settings) as client:
                answer = await client.ask("add 2 and 3", session_id="h", user_id="u", tenant_id="t")
            assert answer.ok

            async def lag_reported() -> bool:
                lag = (await http.get("/healthz")).json()["components"]["lag"]
                return bool(lag["partitions"]) and lag["error"] is None

            await wait_until(lag_reported, "lag of the assigned stage partitions", deadline_s=20)
            assert 'agentstream_consumer_lag{group="' in (await http.get("/metrics")).text

            # --- Redis goes away: not ready (still live), and ready again when it returns
            await own_redis.stop_async()
            await wait_until(
                lambda: answers("/readyz", 503), "readiness to turn false", deadline_s=10
            )
            ready = (await http.get("/readyz")).json()
            assert any(reason.startswith("redis:") for reason in ready["reasons"])
            assert (await http.get("/livez")).status_code == 200
            down = (await http.get("/healthz")).json()
            assert down["status"] == "not_ready"
            assert down["components"]["redis"]["ok"] is False

            await own_redis.start_async()  # same port, empty
            await wait_until(
                lambda: answers("/readyz", 200), "readiness to come back", deadline_s=15
            )
            assert (await http.get("/healthz")).json()["components"]["redis"]["ok"] is True
    finally:
        stop_worker(proc)


async def test_redis_probe_reports_each_change(own_redis: EmbeddedRedis) -> None:
    """The interface an intake gate uses: status(), wait_until(ok=...) and on_change."""
    redis = connect(own_redis.url)
    probe = RedisProbe(redis, interval_s=0.1, timeout_s=0.5)
    seen: list[bool] = []
    probe.on_change(lambda status: seen.append(status.ok))
    assert probe.status().ok is False  # not checked yet
    probe.start()
    try:
        assert (await asyncio.wait_for(probe.wait_until(True), 5)).ok
        assert probe.status().detail.startswith("PING ")
        await own_redis.stop_async()
        down = await asyncio.wait_for(probe.wait_until(False), 5)
        assert down.detail.startswith("PING failed") or "timed out" in down.detail
        assert probe.failures >= 1
        await own_redis.start_async()
        up = await asyncio.wait_for(probe.wait_until(True), 10)
        assert up.since >= down.since
        assert seen == [True, False, True]
    finally:
        await probe.stop()
        await redis.aclose()
