"""What a Redis Cluster changes for the state layer, checked on a real cluster (the session's
with ``--redis=cluster``, else one of its own): routing of a fresh client, the bounded number of
commands in flight, pipelines across slots, hash-tagged scripts, cluster-wide SCAN."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from agentstream.admission.keys import AdmissionKeys
from agentstream.admission.usage import tenants_with_usage, utc_day
from agentstream.embedded import EmbeddedRedisCluster
from agentstream.state.context import AgentContext, ContextStore
from agentstream.state.dedupe import RequestDedupe
from agentstream.state.journal import StepJournal
from agentstream.state.keys import Keys
from agentstream.state.redis import GatedRedisCluster, is_cluster_url, redis_from_url

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if is_cluster_url(redis_url):
        yield redis_url
        return
    with EmbeddedRedisCluster(run_dir=tmp_path_factory.mktemp("own-cluster")) as cluster:
        yield cluster.url


@pytest.fixture
async def client(cluster_url: str) -> AsyncIterator[GatedRedisCluster]:
    made = redis_from_url(cluster_url)
    assert isinstance(made, GatedRedisCluster)
    yield made
    await made.aclose()


async def test_a_fresh_client_routes_its_first_commands_right(
    client: GatedRedisCluster, unique_prefix: str
) -> None:
    """redis-py 8.1 sends commands issued before the slot map is loaded to a random master;
    enough MOVED replies then reset the client under the feet of concurrent commands."""
    keys = Keys(unique_prefix)
    results = await asyncio.gather(
        *(client.hmget(keys.context("t", f"s{i}"), ["v"]) for i in range(100))
    )
    assert results == [[None]] * 100
    assert client.reinitialize_counter == 0  # no MOVED reply at all


async def test_commands_in_flight_are_bounded_without_failing(
    cluster_url: str, unique_prefix: str
) -> None:
    client = redis_from_url(cluster_url, max_connections=2, pool_timeout_s=10)
    assert isinstance(client, RedisCluster)
    try:
        # without the gate, the third concurrent command to a node raises MaxConnectionsError
        await asyncio.gather(*(client.set(f"{unique_prefix}:{i}", i) for i in range(200)))
        assert await client.get(f"{unique_prefix}:199") == b"199"
        opened = {node.name: len(node._connections) for node in client.get_nodes()}
        assert max(opened.values()) <= 2, opened
    finally:
        await client.aclose()


async def test_validation_pipeline_spans_slots(
    client: GatedRedisCluster, unique_prefix: str
) -> None:
    """Dedupe marker ({tenant:request}) and context ({tenant:session}) in one non-transactional
    pipeline, as the validation stage reads them: the cluster client splits it per node."""
    keys = Keys(unique_prefix)
    store = ContextStore(client, keys, ttl_s=60)
    dedupe = RequestDedupe(client, keys, ttl_s=60)
    for i in range(20):
        await store.update(
            "t",
            f"s{i}",
            lambda _c, i=i: AgentContext(session_id=f"s{i}", user_id="u", tenant_id="t"),
        )
    slots = set()
    pipe = store.pipeline()
    for i in range(20):
        dedupe.queue_first_sighting(pipe, "t", f"r{i}", "requests/0/7")
        store.queue_get(pipe, "t", f"s{i}")
        slots |= {
            client.keyslot(keys.request("t", f"r{i}")),
            client.keyslot(keys.context("t", f"s{i}")),
        }
    replies = await pipe.execute()
    assert len({client.get_node_from_key(keys.context("t", f"s{i}")).name for i in range(20)}) > 1
    for i in range(20):
        _, stored, raw_ctx = replies[3 * i : 3 * i + 3]
        assert RequestDedupe.parse(stored, "requests/0/7")
        ctx = ContextStore.parse_get(raw_ctx)
        assert ctx is not None
        assert ctx.session_id == f"s{i}"
    assert len(slots) > 20


async def test_scripts_touch_a_session_context_and_journal_together(
    client: GatedRedisCluster, unique_prefix: str
) -> None:
    keys = Keys(unique_prefix)
    store = ContextStore(client, keys, ttl_s=60)
    journal = StepJournal(client, keys, retention_s=600, owner="w1")
    for i in range(10):
        session = f"tenant:with{{braces}}/{i}"
        step_key = journal.key("t", session, f"r{i}:t0:llm")
        assert client.keyslot(step_key) == client.keyslot(store.key("t", session))
        state, fields = await journal.begin_and_read(
            "t", session, f"r{i}:t0:llm", store.key("t", session)
        )
        assert state.status == "new"
        assert fields == [None, None, None]
        await store.update(
            "t",
            session,
            lambda _c, s=session: AgentContext(session_id=s, user_id="u", tenant_id="t"),
            complete_step=(step_key, "answer", 600),
        )
        assert (await journal.begin("t", session, f"r{i}:t0:llm")).status == "done"


async def test_usage_scan_finds_tenants_on_every_master(
    client: GatedRedisCluster, unique_prefix: str
) -> None:
    keys = AdmissionKeys(unique_prefix)
    day = utc_day(time.time())
    tenants = [f"tenant-{i}" for i in range(30)]
    for tenant in tenants:
        await client.hset(keys.day(tenant, day), "tokens", 1)
    masters = {client.get_node_from_key(keys.day(t, day)).name for t in tenants}
    assert len(masters) == 3
    assert await tenants_with_usage(client, keys) == sorted(tenants)


def test_cluster_url_in_settings_gives_a_cluster_client(tmp_path: Path, cluster_url: str) -> None:
    from agentstream.config import Settings
    from agentstream.state.redis import redis_from_settings

    client = redis_from_settings(Settings(run_dir=tmp_path, redis_url=cluster_url))
    assert isinstance(client, GatedRedisCluster)
