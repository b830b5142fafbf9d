"""Redis Cluster failover under load: kill -9 a master while a worker answers a steady stream of
requests; its replica takes over and the same worker keeps answering (no restart).

Runs on its own embedded cluster (whatever ``--redis`` says), since it breaks one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from agentstream.client import AgentClient, AgentResponse, new_request
from agentstream.config import Settings
from agentstream.embedded import EmbeddedRedisCluster
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal
from agentstream.state.keys import Keys
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA
from tests.support.redis import connect

pytestmark = pytest.mark.integration

SESSIONS = 24
PER_SESSION = 12
NODE_TIMEOUT_MS = 2000


@pytest.fixture
async def cluster(tmp_path: Path) -> Any:
    cluster = EmbeddedRedisCluster(run_dir=tmp_path / "cluster", node_timeout_ms=NODE_TIMEOUT_MS)
    await cluster.start_async()
    try:
        yield cluster
    finally:
        await cluster.stop_async()


async def _master_slots(url: str) -> dict[int, list[tuple[int, int]]]:
    client = connect(url)
    try:
        slots = await client.cluster_slots()  # type: ignore[union-attr]
    finally:
        await client.aclose()
    owners: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for (lo, hi), entry in slots.items():
        owners[int(entry["primary"][1])].append((lo, hi))
    return owners


async def test_killed_master_fails_over_and_the_worker_keeps_answering(
    cluster: EmbeddedRedisCluster, settings_factory: Any
) -> None:
    settings: Settings = settings_factory(redis_url=cluster.url, kafka=FAST_KAFKA)
    await ensure_topics(settings)
    keys = Keys(settings.state.key_prefix)
    owners = await _master_slots(cluster.url)
    victim_port = min(owners)  # any master
    victim_ranges = owners[victim_port]

    def on_victim(session: str) -> bool:
        slot = key_slot(keys.context("acme", session).encode())
        return any(lo <= slot <= hi for lo, hi in victim_ranges)

    sessions = [f"s{i}" for i in range(SESSIONS)]
    affected = {s for s in sessions if on_victim(s)}
    assert affected, "no session on the master to kill; change SESSIONS"
    victim = cluster.node_by_port(victim_port)
    victim_pid = victim.pid
    assert victim_pid is not None

    submitted: dict[str, tuple[str, int, float]] = {}  # request_id -> session, index, sent at
    received: dict[str, list[tuple[AgentResponse, float]]] = defaultdict(list)
    killed_at: float | None = None
    promoted_at: float | None = None

    async with PipelineWorker(settings) as worker, AgentClient(settings) as client:
        total = SESSIONS * PER_SESSION
        all_in = asyncio.Event()

        async def collect() -> None:
            async for response in client.responses():
                received[response.request_id].append((response, time.monotonic()))
                if len(received) == total:
                    all_in.set()

        async def watch_failover() -> None:
            nonlocal promoted_at
            while True:
                await asyncio.sleep(0.05)
                roles = await asyncio.to_thread(cluster.roles)
                if sorted(roles.values()).count("master") == 3 and roles[victim_port] == "fail":
                    promoted_at = time.monotonic()
                    return

        collector = asyncio.create_task(collect())
        await asyncio.sleep(0)
        for index in range(PER_SESSION):
            for session in sessions:
                request = new_request(
                    f"add {index} and {len(session)}",
                    session_id=session,
                    user_id=f"u-{session}",
                    tenant_id="acme",
                )
                await client.submit(request)
                submitted[request["request_id"]] = (session, index, time.monotonic())
            await asyncio.sleep(0.1)  # a steady stream, a round of sessions at a time
            if index == 3:  # mid-load: some answered, most still to come
                os.kill(victim_pid, signal.SIGKILL)
                killed_at = time.monotonic()
                watcher = asyncio.create_task(watch_failover())
        await asyncio.wait_for(all_in.wait(), timeout=120)
        await asyncio.wait_for(watcher, timeout=60)
        collector.cancel()
        # the same in-process worker answered everything, and the failover cost waits, not
        # failed stage events: no event went to a retry tier or the dead-letter topic
        stats = [runner.stats for runner in worker.runners.values()]
        assert sum(s.retried_later + s.dead_lettered for s in stats) == 0, stats

    assert killed_at is not None
    assert promoted_at is not None
    # every request answered exactly once, each session's answers in order, all correct
    by_session: dict[str, list[tuple[int, AgentResponse]]] = defaultdict(list)
    for request_id, (session, index, _) in submitted.items():
        answers = received[request_id]
        assert len(answers) == 1, (request_id, answers)
        response = answers[0][0]
        assert response.state == "COMPLETED", (response.error_code, response.content)
        assert f"The answer is {index + len(session)}." in response.content
        by_session[session].append((index, response))
    arrival = {rid: answers[0][1] for rid, answers in received.items()}
    for session in sessions:
        order = sorted(
            (arrival[rid], idx) for rid, (s, idx, _) in submitted.items() if s == session
        )
        assert [idx for _, idx in order] == list(range(PER_SESSION)), session
    # recovery: from the kill to the first answer for a session on the killed master that was
    # sent after the kill
    after = [
        arrival[rid] - killed_at
        for rid, (session, _, sent) in submitted.items()
        if session in affected and sent > killed_at
    ]
    recovery_s = min(after)
    print(
        f"\nredis failover: replica promoted {promoted_at - killed_at:.2f}s after kill -9 of the "
        f"master (cluster-node-timeout {NODE_TIMEOUT_MS} ms); first answer for its sessions "
        f"{recovery_s:.2f}s after; {len(affected)}/{SESSIONS} sessions on it, "
        f"{len(submitted)} requests all answered once"
    )
    assert (await _master_slots(cluster.url)).keys().isdisjoint({victim_port})


async def _wait_promoted(cluster: EmbeddedRedisCluster, port: int, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        roles = await asyncio.to_thread(cluster.roles)
        if roles.get(port) == "master":
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"replica {port} not promoted within {timeout_s}s")


async def test_writes_acknowledged_but_not_replicated_are_lost_as_documented(
    cluster: EmbeddedRedisCluster, unique_prefix: str
) -> None:
    """Replication is asynchronous: a master acknowledges a write before its replica has it.

    The replica is stopped (SIGSTOP) and the master's replication stream filled past the socket
    buffers, so the state writes that follow stay in the master's output buffer; the master is
    then killed and the replica, resumed, takes over without them. What the state layer then
    reports is what docs/architecture.md ("Redis Cluster failover") says each loss costs."""
    keys = Keys(unique_prefix)
    owners = await _master_slots(cluster.url)
    victim_port = min(owners)

    def on_victim(key: str) -> bool:
        slot = key_slot(key.encode())
        return any(lo <= slot <= hi for lo, hi in owners[victim_port])

    session = next(f"s{i}" for i in range(1000) if on_victim(keys.context("t", f"s{i}")))
    request = next(f"r{i}" for i in range(1000) if on_victim(keys.request("t", f"r{i}")))
    client = connect(cluster.url)
    try:
        nodes = {
            int(address.rsplit(":", 1)[1]): info
            for address, info in (await client.cluster_nodes()).items()  # type: ignore[union-attr]
        }
        victim_id = nodes[victim_port]["node_id"]
        replica_port = next(p for p, n in nodes.items() if n["master_id"] == victim_id)
        replica = cluster.node_by_port(replica_port)
        assert replica.pid is not None
        store = ContextStore(client, keys, ttl_s=600)
        journal = StepJournal(client, keys, retention_s=600, owner="w1")
        dedupe = RequestDedupe(client, keys, ttl_s=600)
        step = f"{request}:t0:llm"

        os.kill(replica.pid, signal.SIGSTOP)
        try:
            filler = b"x" * (1 << 20)
            for i in range(32):  # 32 MB: more than the loopback socket buffers hold
                await client.set(f"{{t:{session}}}:filler:{i}", filler)
            # the writes of one request, each acknowledged by the master:
            pipe = store.pipeline()
            dedupe.queue_first_sighting(pipe, "t", request, "requests/0/1")
            _, stored = await pipe.execute()
            assert RequestDedupe.parse(stored, "requests/0/1")
            await store.update(
                "t",
                session,
                lambda _c: AgentContext(session_id=session, user_id="u", tenant_id="t"),
            )
            assert (await journal.begin("t", session, step)).status == "new"
            await journal.complete("t", session, step, "the answer")
            assert (await journal.begin("t", session, step)).status == "done"
            os.kill(cluster.node_by_port(victim_port).pid or 0, signal.SIGKILL)
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        promoted_s = await _wait_promoted(cluster, replica_port, timeout_s=30)

        # the dedupe marker is gone: a client's repeat of the request is accepted again
        pipe = store.pipeline()
        dedupe.queue_first_sighting(pipe, "t", request, "requests/0/2")
        _, stored = await pipe.execute()
        assert RequestDedupe.parse(stored, "requests/0/2")
        # the context of the new session is gone: the next stage answers CONTEXT_LOST
        assert await store.get("t", session) is None
        # the completed LLM step is forgotten: a redelivery runs the model again
        assert (await journal.begin("t", session, step)).status == "new"
    finally:
        await client.aclose()
    print(f"\nlost writes: replica promoted {promoted_s:.2f}s after the master was killed")
