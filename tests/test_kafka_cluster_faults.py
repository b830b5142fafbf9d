"""Broker failure on a real 3-broker Apache Kafka cluster (replication factor 3, min ISR 2).

Mid-load, the broker leading most of the stage topics' partitions is killed with kill -9. The
pipeline must answer every request exactly once (one response_id per request), in order per
session, none lost; the time to recover is printed. Runs with ``--kafka=apache-cluster`` only.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator

import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.embedded import ApacheKafka
from agentstream.schemas.codec import codec_from_settings
from agentstream.streams.admin import admin_client, ensure_topics
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.workers import start_worker, stop_worker

pytestmark = [pytest.mark.integration, pytest.mark.kafka_matrix("apache-cluster")]

SESSIONS = 12
ROUNDS = 12
ROUND_GAP_S = 0.25
KILL_AFTER_ROUND = 3


@pytest.fixture
def worker(pipeline_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(pipeline_settings)
    yield proc
    stop_worker(proc)


@pytest.fixture
async def pipeline_settings(settings_factory: object) -> Settings:
    assert callable(settings_factory)
    settings: Settings = settings_factory(kafka=FAST_KAFKA)
    await ensure_topics(settings)
    return settings


async def _busiest_leader(settings: Settings) -> tuple[int, int]:
    """The broker leading most partitions of the stage topics, and how many it leads."""
    t = settings.topics
    names = [t.requests, t.generation, t.tool_calls]
    deadline = time.monotonic() + 30
    async with admin_client(settings) as admin:
        while True:  # each broker learns of new topics on its own time: ask until one knows
            described = await admin.describe_topics(names)
            partitions = [p for topic in described for p in topic["partitions"]]
            if len(partitions) == 4 * len(names) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    leaders = Counter(p["leader"] for p in partitions if p["leader"] >= 0)
    assert leaders, f"no partition leaders for {names}: {described}"
    node, count = leaders.most_common(1)[0]
    return int(node), count


async def test_killing_the_leading_broker_loses_and_repeats_nothing(
    pipeline_settings: Settings,
    kafka_cluster: ApacheKafka,
    worker: subprocess.Popen[bytes],
) -> None:
    settings = pipeline_settings
    codec = codec_from_settings(settings)
    await codec.prepare()
    reader = TopicReader(settings, settings.topics.responses, codec, "AgentResponse")
    victim, led = await _busiest_leader(settings)
    killed_at = 0.0
    try:
        async with reader, AgentClient(settings) as client:
            warm = await client.ask(
                "hello", session_id="warm", user_id="u", tenant_id="t", timeout=120
            )
            assert warm.ok, warm

            order: dict[str, list[str]] = defaultdict(list)
            for round_no in range(ROUNDS):
                if round_no == KILL_AFTER_ROUND:
                    kafka_cluster.kill_node(victim)
                    killed_at = time.monotonic()
                for s in range(SESSIONS):
                    request = new_request(
                        f"add {round_no} and {s}", session_id=f"s{s}", user_id="u", tenant_id="t"
                    )
                    order[f"s{s}"].append(str(request["request_id"]))
                    await client.submit(request)
                await asyncio.sleep(ROUND_GAP_S)
            wanted = {rid for rids in order.values() for rid in rids}

            def answered() -> set[str]:
                return {v["request_id"] for v in reader.values} & wanted

            await reader.wait_for(
                lambda: answered() == wanted,
                deadline_s=180,
                what=f"answers to all {len(wanted)} requests",
            )
            all_answered_s = time.monotonic() - killed_at
    finally:
        await codec.aclose()

    mine = [v for v in reader.values if v["request_id"] in wanted]
    response_ids: dict[str, set[str]] = defaultdict(set)
    for value in mine:
        response_ids[value["request_id"]].add(value["response_id"])
    assert {rid: len(ids) for rid, ids in response_ids.items()} == dict.fromkeys(wanted, 1)
    assert {v["state"] for v in mine} == {"COMPLETED"}
    for session, sent in order.items():
        seen = list(dict.fromkeys(v["request_id"] for v in mine if v["session_id"] == session))
        assert seen == sent, f"session {session} answered out of order"

    repeats = len(mine) - len(wanted)
    print(
        f"\nkilled broker {victim} (leader of {led} stage partitions); {len(wanted)} requests on "
        f"{SESSIONS} sessions all answered {all_answered_s:.1f} s after the kill; "
        f"{repeats} repeated response record(s) with the same response_id"
    )

    await kafka_cluster.restart_node_async(victim)  # leave the cluster whole for later tests
