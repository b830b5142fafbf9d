"""Redis faults under load (issue 16), on the real broker and a Redis server of the test's own.

- Redis restarted mid-load (its data kept, append-only file) and every client connection killed
  mid-load (``CLIENT KILL``) each leave every request answered once and correctly, no dead
  letters, and no session claimed once its request's answer is out: a worker pauses intake while
  Redis is down, waits for it instead of failing events, and retries the post-publish release;
- Redis restarted *empty*: a session whose history was lost is told so (``CONTEXT_LOST``) on its
  next request that names the response it follows, and the request after that starts afresh.

These tests always run on their own single Redis (whatever ``--redis`` says): they stop and start
it. Redis Cluster failover is covered by tests/test_redis_failover.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from agentstream.client import AgentClient, AgentResponse, new_request
from agentstream.config import Settings
from agentstream.embedded import EmbeddedRedis
from agentstream.embedded.process import free_port
from agentstream.state.context_scripts import FREE
from agentstream.state.keys import Keys
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

SESSIONS = 12
PER_SESSION = 6
OUTAGE_S = 1.0


class PersistentRedis(EmbeddedRedis):
    """The embedded Redis with an append-only file fsynced on every write: a restart keeps
    everything, as a production Redis with ``appendfsync always`` would."""

    def argv(self, binary: Path, port: int) -> list[str]:
        argv = super().argv(binary, port)
        argv[argv.index("--appendonly") + 1] = "yes"
        return [*argv, "--appendfsync", "always"]


@pytest.fixture
async def persistent_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = PersistentRedis(run_dir=tmp_path / "aof-redis", port=free_port())
    await server.start_async()
    try:
        yield server
    finally:
        await server.stop_async()


async def settings_on(settings_factory: Any, redis: EmbeddedRedis) -> Settings:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, redis_url=redis.url)
    await ensure_topics(settings)
    return settings


def dlq_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.dlq(t.requests), t.dlq(t.generation), t.dlq(t.tool_calls)]


async def converse(
    client: AgentClient, session: str, answers: list[tuple[int, AgentResponse]]
) -> None:
    """One session's requests, each sent when the previous one is answered (the client names
    the response each follows)."""
    rng = random.Random(session)
    for _ in range(PER_SESSION):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        response = await client.ask(
            f"add {a} and {b}", session_id=session, user_id="u", tenant_id="t", timeout=120
        )
        answers.append((a + b, response))


async def claimed_sessions(redis: Redis, settings: Settings, sessions: list[str]) -> list[str]:
    keys = Keys(settings.state.key_prefix)
    held = [await redis.hget(keys.context("t", s), "a") for s in sessions]
    return [s for s, a in zip(sessions, held, strict=True) if a not in (None, FREE.encode())]


async def load_with_fault(
    settings: Settings, server: EmbeddedRedis, fault: Callable[[], Awaitable[None]]
) -> PipelineWorker:
    """Run the load, inject ``fault`` once the first answers are in, and check the outcome."""
    sessions = [f"s{i}" for i in range(SESSIONS)]
    answers: list[tuple[int, AgentResponse]] = []
    readers = [TopicReader(settings, topic) for topic in dlq_topics(settings)]
    async with PipelineWorker(settings) as worker, AgentClient(settings) as client:
        for reader in readers:
            await reader.__aenter__()
        try:
            talks = [asyncio.create_task(converse(client, s, answers)) for s in sessions]
            await wait_until(lambda: len(answers) >= SESSIONS, "the first answers")
            await fault()
            await asyncio.gather(*talks)
            redis = Redis.from_url(server.url)
            try:
                await wait_until(
                    lambda: _none_claimed(redis, settings, sessions), "every session released", 10
                )
            finally:
                await redis.aclose()
        finally:
            for reader in readers:
                await reader.__aexit__(None, None, None)
    assert len(answers) == SESSIONS * PER_SESSION
    wrong = [(expected, r.content) for expected, r in answers if r.error_code is not None]
    assert not wrong, f"failed answers: {wrong[:5]}"
    assert all(r.content == f"The answer is {expected}." for expected, r in answers)
    assert len({r.response_id for _, r in answers}) == len(answers)
    assert [len(reader.records) for reader in readers] == [0, 0, 0], "dead letters from a blip"
    return worker


async def _none_claimed(redis: Redis, settings: Settings, sessions: list[str]) -> bool:
    return not await claimed_sessions(redis, settings, sessions)


async def test_redis_restart_mid_load_loses_nothing(
    settings_factory: Any, persistent_redis: EmbeddedRedis
) -> None:
    settings = await settings_on(settings_factory, persistent_redis)

    async def restart() -> None:
        await persistent_redis.stop_async()
        await asyncio.sleep(OUTAGE_S)  # the outage itself
        await persistent_redis.start_async()

    worker = await load_with_fault(settings, persistent_redis, restart)
    # the worker noticed, paused and resumed by itself
    assert worker.redis_gate.outages >= 1
    assert worker.redis_gate.up
    stats = [r.stats for r in worker.runners.values()]
    assert sum(s.dead_lettered for s in stats) == 0
    assert sum(s.retried_later for s in stats) == 0


async def test_client_connections_killed_mid_load_lose_nothing(
    settings_factory: Any, persistent_redis: EmbeddedRedis
) -> None:
    settings = await settings_on(settings_factory, persistent_redis)
    admin = Redis.from_url(persistent_redis.url)

    async def kill_connections() -> None:
        for _ in range(3):
            killed = await admin.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
            await asyncio.sleep(0.3)

    try:
        worker = await load_with_fault(settings, persistent_redis, kill_connections)
    finally:
        await admin.aclose()
    stats = [r.stats for r in worker.runners.values()]
    assert sum(s.dead_lettered for s in stats) == 0


async def test_lost_history_is_told_not_silent(
    settings_factory: Any, own_redis: EmbeddedRedis
) -> None:
    settings = await settings_on(settings_factory, own_redis)
    ask = {"session_id": "chat", "user_id": "u", "tenant_id": "t"}
    async with PipelineWorker(settings) as worker, AgentClient(settings) as client:
        first = await client.ask("add 1 and 2", **ask)
        assert first.content == "The answer is 3."
        await own_redis.stop_async()  # restarted empty: the history is gone
        await own_redis.start_async()
        lost = await client.ask("add 2 and 3", timeout=60, **ask)
        assert (lost.state, lost.error_code) == ("ERROR", "CONTEXT_LOST")
        assert "no longer available" in lost.content
        again = await client.ask("add 3 and 4", **ask)  # follows the CONTEXT_LOST answer
        assert again.content == "The answer is 7."
        assert worker.redis_gate.up
    # a caller that does not name the response it follows cannot be told (documented)
    async with PipelineWorker(settings) as _, AgentClient(settings) as fresh:
        other = await fresh.ask("add 4 and 5", session_id="chat", user_id="u", tenant_id="t")
        assert other.content == "The answer is 9."


async def test_validation_takes_the_retry_tiers_while_redis_stays_down(
    settings_factory: Any, own_redis: EmbeddedRedis
) -> None:
    """Attempts used up while Redis is still down go to the retry tiers, never the DLQ, and the
    request is answered once Redis is back."""
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA,
        redis_url=own_redis.url,
        failure={"max_attempts": 2, "outage_wait_s": 0.3},
        topics={"retry_tiers_s": [1.0, 2.0]},
    )
    await ensure_topics(settings)
    t = settings.topics
    async with (
        PipelineWorker(settings) as worker,
        AgentClient(settings) as client,
        TopicReader(settings, t.dlq(t.requests)) as dead,
        TopicReader(settings, t.retry_topic(t.requests, 0)) as retried,
    ):
        warm = await client.ask("add 1 and 1", session_id="w", user_id="u", tenant_id="t")
        assert warm.content == "The answer is 2."
        await own_redis.stop_async()
        request = new_request("add 20 and 22", session_id="down", user_id="u", tenant_id="t")
        answer = client.expect(request["request_id"])
        await client.submit(request)
        await retried.wait_for(lambda: len(retried.records) == 1, what="a validation retry")
        await own_redis.start_async()
        response = await asyncio.wait_for(answer, 60)
        assert response.content == "The answer is 42."
        assert dead.records == []
        assert worker.runners["validation"].stats.retried_later >= 1
