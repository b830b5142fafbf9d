"""Which client a Redis URL gives: one server, or a Redis Cluster (``redis+cluster://``)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from agentstream.exceptions import ConfigError
from agentstream.state.redis import GatedRedisCluster, is_cluster_url, redis_from_url


async def test_plain_url_gives_a_single_server_client_with_a_blocking_pool() -> None:
    client = redis_from_url("redis://:pw@r1:6390/2", max_connections=7, pool_timeout_s=3)
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert pool.max_connections == 7
    assert pool.connection_kwargs["host"] == "r1"
    assert pool.connection_kwargs["db"] == 2
    await client.aclose()


async def test_cluster_url_lists_startup_nodes_and_keeps_credentials() -> None:
    url = "redis+cluster://user:s%40cret@r1:7000,r2:7001,r3/"
    assert is_cluster_url(url)
    client = redis_from_url(url, max_connections=5)
    assert isinstance(client, GatedRedisCluster)
    assert isinstance(client, RedisCluster)
    nodes = client.nodes_manager.startup_nodes
    assert sorted(nodes) == ["r1:7000", "r2:7001", "r3:6379"]
    kwargs = client.nodes_manager.connection_kwargs
    assert kwargs["username"] == "user"
    assert kwargs["password"] == "s@cret"
    assert kwargs["max_connections"] == 5
    await client.aclose()


async def test_tls_cluster_url() -> None:
    client = redis_from_url("rediss+cluster://r1:7000/")
    assert isinstance(client, RedisCluster)
    assert client.nodes_manager.connection_kwargs["connection_class"].__name__ == "SSLConnection"
    await client.aclose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster:///", "names no cluster node"),
        ("redis+cluster://r1:7000/3", "only database 0"),
        ("redis+cluster://r1:notaport/", "bad cluster node"),
    ],
)
def test_bad_cluster_urls_name_the_setting(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        redis_from_url(url)
    assert "AGENTSTREAM_REDIS_URL" in str(caught.value)


def test_cluster_clients_refuse_transactions() -> None:
    client = redis_from_url("redis+cluster://r1:7000/")
    with pytest.raises(ConfigError, match="no transactions"):
        client.pipeline(transaction=True)


@pytest.mark.parametrize(
    "error",
    [
        "MaxConnectionsError",
        "ClusterDownError",
        "MasterDownError",
        "TryAgainError",
        "ReadOnlyError",
    ],
)
def test_cluster_failover_errors_count_as_transient(error: str) -> None:
    """A failover's errors go to a retry tier, never to the dead-letter topic."""
    import redis.exceptions

    from agentstream.streams.policy import transient as _transient

    assert _transient(getattr(redis.exceptions, error)("during failover"))
