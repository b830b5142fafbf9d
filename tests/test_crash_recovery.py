"""Crash recovery on the real broker and Redis: kill -9 a worker mid-flight, restart, verify.

(a) an early slow event holds back the commit of later finished ones; after kill -9 and a
    restart every request is answered exactly once from the client's view, the slow one is not
    lost, and finished LLM steps are not run again (step journal);
(b) a side-effecting tool runs exactly once per call across a kill -9 in the middle of a batch:
    finished calls come from the journal, the call whose outcome is unknown is dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agentstream.client import AgentClient, AgentResponse, new_request
from agentstream.config import Settings
from agentstream.schemas import dead_letter as dlq
from agentstream.schemas.codec import codec_from_settings
from agentstream.state.journal import StepJournal
from agentstream.state.keys import Keys
from agentstream.streams.admin import ensure_topics
from agentstream.streams.replay import replay
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.redis import connect
from tests.support.wait import wait_until
from tests.support.workers import worker_env

pytestmark = pytest.mark.integration


class Workers:
    def __init__(self, settings: Settings, slow_s: float) -> None:
        self.env = worker_env(settings) | {"TEST_SLOW_S": str(slow_s)}
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.worker_proc"],
            env=self.env,
            cwd=os.getcwd(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"READY"
        self.procs.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def one_partition(settings_factory: Any) -> Settings:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, topics={"partitions": 1})
    return settings


@pytest.fixture
def workers(one_partition: Settings) -> Iterator[Workers]:
    group = Workers(one_partition, slow_s=3.0)
    yield group
    group.stop_all()


async def test_kill9_with_slow_early_offset_answers_everything_once(
    one_partition: Settings, workers: Workers
) -> None:
    settings = one_partition
    await ensure_topics(settings)
    redis = connect(settings.redis_url or "")
    prefix = settings.state.key_prefix
    first = workers.start()
    slow = new_request(
        "[slow] take your time",
        session_id="slow",
        user_id="u",
        tenant_id="t",
        metadata={"rid": "slow"},
        request_id="slow",
    )
    fast = [
        new_request(
            f"add {i} and {i}",
            session_id=f"f{i}",
            user_id="u",
            tenant_id="t",
            metadata={"rid": f"fast{i}"},
            request_id=f"fast{i}",
        )
        for i in range(20)
    ]
    seen: dict[str, list[AgentResponse]] = {}
    async with AgentClient(settings) as client:

        async def collect() -> None:
            async for response in client.responses():
                seen.setdefault(response.request_id, []).append(response)

        collector = asyncio.create_task(collect())
        await client.submit(slow)
        for request in fast:
            await client.submit(request)

        async def fast_done() -> bool:
            return all(r["request_id"] in seen for r in fast)

        await wait_until(fast_done, "the fast requests' answers", deadline_s=30)
        assert "slow" not in seen  # still sleeping inside the first worker
        workers.kill9(first)
        workers.start()

        async def slow_done() -> bool:
            return "slow" in seen

        await wait_until(slow_done, "the slow request's answer after restart", deadline_s=60)
        # a later request on the same partition proves the redeliveries were all processed
        last = await client.ask("hello", session_id="after", user_id="u", tenant_id="t", timeout=30)
        assert last.ok
        collector.cancel()
        duplicates = client.duplicates_dropped
    assert {rid: len(v) for rid, v in seen.items() if rid != last.request_id} == {
        r["request_id"]: 1 for r in [slow, *fast]
    }
    assert seen["slow"][0].ok
    for i, request in enumerate(fast):
        assert seen[request["request_id"]][0].content == f"The answer is {2 * i}."
        # the finished LLM steps were redelivered but not run again: two LLM turns each
        assert int(await redis.get(f"{prefix}:test:llm:fast{i}") or 0) == 2
    # the slow step was in flight at the kill and ran again (a model call has no side effects)
    assert int(await redis.get(f"{prefix}:test:llm:slow") or 0) == 2
    assert duplicates >= 1  # finished responses were republished, and dropped by the client
    await redis.aclose()


async def test_side_effecting_tool_runs_once_per_call_across_kill9(
    one_partition: Settings, workers: Workers
) -> None:
    settings = one_partition
    await ensure_topics(settings)
    redis = connect(settings.redis_url or "")
    prefix = settings.state.key_prefix
    first = workers.start()
    request = new_request(
        "[count 3] please",
        session_id="c",
        user_id="u",
        tenant_id="t",
        metadata={"rid": "count"},
        request_id="count",
    )
    async with (
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.dlq(settings.topics.tool_calls)) as dead,
    ):
        await client.submit(request)

        async def batch_mid_flight() -> bool:
            keys = Keys(prefix)
            done = [
                await redis.hget(keys.step("t", "c", f"count:t0:c{i}"), "status") for i in (0, 1)
            ]
            running = await redis.hget(keys.step("t", "c", "count:t0:c2"), "status")
            return done == [b"done", b"done"] and running == b"running"

        await wait_until(batch_mid_flight, "two calls done and the third running", deadline_s=30)
        workers.kill9(first)
        workers.start()
        await dead.wait_for(lambda: len(dead.records) == 1, what="the outcome-unknown record")
        # a later request of the same session runs: the session was released
        after = await client.ask("add 1 and 2", session_id="c", user_id="u", tenant_id="t")
        assert after.content == "The answer is 3."
        # redelivered copies of the batch (upstream offsets not yet committed at the kill) were
        # dropped, not dead-lettered again: the tool-calls partition is past them by now
        assert len(dead.records) == 1
    headers = dlq.header_map(list(dead.records[0].headers))
    assert headers[dlq.ERROR_CODE] == "TOOL_OUTCOME_UNKNOWN"
    assert "counter" in headers[dlq.EXCEPTION_MESSAGE]
    assert int(await redis.get(f"{prefix}:test:counter") or 0) == 3
    assert sorted(int(x) for x in await redis.lrange(f"{prefix}:test:counter:calls", 0, -1)) == [
        0,
        1,
        2,
    ]
    # the dead letter names the call an operator must judge (never its arguments) ...
    assert json.loads(headers[dlq.UNKNOWN_CALLS]) == [
        {
            "tool": "counter",
            "step": "count:t0:c2",
            "read_only": False,
            "accepts_idempotency_key": False,
        }
    ]
    # ... and a replay without --rerun-side-effects holds it back, listing the call
    codec = codec_from_settings(settings)
    await codec.prepare()
    journal = StepJournal(redis, Keys(prefix), retention_s=3600, owner="test")
    dlq_topic = settings.topics.dlq(settings.topics.tool_calls)
    summary = await replay(settings, dlq_topic, codec, step_status=journal.status)
    assert (summary.replayed, summary.held_side_effects) == (0, 1)
    (record,) = summary.side_effects
    assert [(c.tool, c.journal, c.accepts_idempotency_key) for c in record.calls] == [
        ("counter", "unknown", False)
    ]
    assert int(await redis.get(f"{prefix}:test:counter") or 0) == 3
    await codec.aclose()
    await redis.aclose()
