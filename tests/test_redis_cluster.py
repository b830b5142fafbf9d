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
from agentstream.state.context import AgentContext, ContextStore, StepDone
from agentstream.state.journal import StepJournal
from agentstream.state.keys import Keys
from agentstream.state.redis import GatedRedisCluster, is_cluster_url, redis_from_url
from agentstream.state.redis_session import RedisSessionStore
from agentstream.state.session import Claim, ClaimOutcome, RequestIds

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


async def test_validation_open_spans_slots(client: GatedRedisCluster, unique_prefix: str) -> None:
    """Dedupe marker ({tenant:request}) and session claim ({tenant:session}) in one
    non-transactional pipeline, as validation opens a request: the cluster client splits it
    per node, and a node that does not know the claim script yet (NOSCRIPT) gets it sent again
    on its own."""
    keys = Keys(unique_prefix)
    sessions = RedisSessionStore(
        client, keys, context_ttl_s=60, dedupe_ttl_s=60, journal_retention_s=600, owner="w1"
    )
    claim = Claim(stale_s=60)
    await client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.PRIMARIES)
    openings = [
        await sessions.open(_ids(f"r{i}", f"s{i}"), "requests/0/7", claim) for i in range(20)
    ]
    assert all(o.first_sighting and o.claim is ClaimOutcome.CLAIMED for o in openings)
    assert len({client.get_node_from_key(keys.context("t", f"s{i}")).name for i in range(20)}) > 1
    assert len({client.keyslot(keys.request("t", f"r{i}")) for i in range(20)}) > 10
    # a repeat at another position: not a first sighting; r0 still holds its session
    again = await sessions.open(_ids("r0", "s0"), "requests/1/9", claim)
    assert (again.first_sighting, again.claim) == (False, ClaimOutcome.HELD)
    # another request of a held session waits
    busy = await sessions.open(_ids("r99", "s0"), "requests/0/8", claim)
    assert (busy.first_sighting, busy.claim) == (True, ClaimOutcome.BUSY)


def _ids(request: str, session: str) -> RequestIds:
    return RequestIds(request_id=request, session_id=session, user_id="u", tenant_id="t")


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
        assert fields == [None, None, None, None]
        await store.update(
            "t",
            session,
            lambda _c, s=session: AgentContext(session_id=s, user_id="u", tenant_id="t"),
            complete_step=StepDone(step_key, "answer", 600),
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
