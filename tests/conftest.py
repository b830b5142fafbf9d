"""Shared fixtures: a real Kafka broker and a real Redis for the whole session.

The broker is chosen by ``--kafka`` (see tests/support/kafka_matrix.py): ``tansu`` (default, the
embedded Tansu broker), ``apache`` (one Apache Kafka 4 node), ``apache-cluster`` (three nodes),
``container`` (testcontainers), or ``AGENTSTREAM_TEST_KAFKA=host:port``.

Redis, first match wins:

1. ``AGENTSTREAM_TEST_REDIS`` (``redis://...``);
2. ``--kafka=container`` with a working Docker engine: redis:7 via testcontainers;
3. otherwise: ``redis-server`` from the wheel, on a free loopback port, stopped at session end.

``--redis=cluster`` replaces the single Redis with an embedded Redis Cluster (3 masters, one
replica each; ``redis+cluster://`` URL) unless ``AGENTSTREAM_TEST_REDIS`` names one. Tests that
talk to Redis themselves connect with ``tests.support.redis.connect``, which gives a cluster
client for such a URL.

The machine's own Redis on 6379 is never used implicitly: the tests start their own.
Per test, ``settings_factory`` gives :class:`Settings` whose topics, consumer group and Redis key
prefix carry a unique prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream.config import Settings, TopicSettings
from agentstream.embedded import EmbeddedRedis, EmbeddedRedisCluster
from agentstream.embedded.process import free_port
from agentstream.streams.admin import ensure_topics
from tests.support import kafka_matrix
from tests.support.kafka_matrix import (  # fixtures of the Kafka matrix
    kafka_bootstrap,
    kafka_cluster,
    kafka_kind,
    kafka_replication_factor,
)
from tests.support.redis import RedisClient, connect

__all__ = ["kafka_bootstrap", "kafka_cluster", "kafka_kind", "kafka_replication_factor"]

REDIS_IMAGE = "redis:7-alpine"
_TOPIC_NAME_FIELDS = (
    "requests",
    "generation",
    "tool_calls",
    "responses",
    "errors",
    "metrics",
    "approvals",
    "approval_decisions",
    "approval_audit",
    "delegation_results",
)

SettingsFactory = Callable[..., Settings]


def pytest_addoption(parser: pytest.Parser) -> None:
    kafka_matrix.add_kafka_option(parser)
    parser.addoption(
        "--redis",
        choices=("single", "cluster"),
        default="single",
        help="Redis for integration tests: one server (default) or an embedded Redis Cluster "
        "of 3 masters with a replica each.",
    )


# --- backends ---------------------------------------------------------------------------------


_CONTAINERS = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    containers = config.getoption("--kafka") == "container" and _docker_works()
    config.stash[_CONTAINERS] = containers
    kafka_matrix.configure_kafka(config, containers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kafka_matrix.deselect_other_matrices(config, items)


def pytest_report_header(config: pytest.Config) -> list[str]:
    redis = os.environ.get("AGENTSTREAM_TEST_REDIS") or (
        "embedded-cluster"
        if config.getoption("--redis") == "cluster"
        else "container"
        if config.stash[_CONTAINERS]
        else "embedded"
    )
    return [f"agentstream backends: {kafka_matrix.kafka_header(config)}, redis={redis}"]


def _docker_works() -> bool:
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
    except (DockerException, OSError):
        return False
    return True


@contextmanager
def _redis_container() -> Iterator[str]:
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"redis://{host}:{port}/0"


# --- session fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``redis://`` URL of a Redis server (``redis+cluster://`` with ``--redis=cluster``) for the
    whole session."""
    from_env = os.environ.get("AGENTSTREAM_TEST_REDIS")
    if from_env:
        yield from_env
    elif request.config.getoption("--redis") == "cluster":
        with EmbeddedRedisCluster(run_dir=tmp_path_factory.mktemp("redis-cluster")) as cluster:
            yield cluster.url
    elif request.config.stash[_CONTAINERS]:
        with _redis_container() as url:
            yield url
    else:
        with EmbeddedRedis(run_dir=tmp_path_factory.mktemp("redis")) as redis:
            yield redis.url


# --- per-test fixtures ------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    """A client of the session's Redis (a cluster client under ``--redis=cluster``)."""
    client = connect(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    """A single Redis server of this test's own (to stop, restart or break), on a free port."""
    server = EmbeddedRedis(run_dir=tmp_path / "own-redis", port=free_port())
    await server.start_async()
    try:
        yield server
    finally:
        await server.stop_async()


@pytest.fixture
def unique_prefix() -> str:
    """A short, unique, topic-safe prefix such as ``t1a2b3c``."""
    return f"t{uuid.uuid4().hex[:6]}"


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str,
    kafka_replication_factor: int,
    redis_url: str,
    unique_prefix: str,
    tmp_path: Path,
) -> SettingsFactory:
    """``settings_factory(**overrides) -> Settings`` isolated by ``unique_prefix``.

    Topic names become ``<prefix>.<default name>``, partitions default to 4 (replication factor:
    the matrix's, 3 on the Apache Kafka cluster), the consumer group
    and Redis key prefix are unique. ``topics=`` / ``state=`` overrides (dicts or models) are
    merged into those isolated groups; any other keyword replaces the field. Calls within one
    test share the prefix, so a worker and a client built from it see the same topics.
    """

    def make(**overrides: Any) -> Settings:
        defaults = TopicSettings()
        topics: dict[str, Any] = {
            field: f"{unique_prefix}.{getattr(defaults, field)}" for field in _TOPIC_NAME_FIELDS
        }
        topics["partitions"] = 4
        topics["replication_factor"] = kafka_replication_factor
        topics.update(_as_dict(overrides.pop("topics", {})))
        state = {"key_prefix": unique_prefix, **_as_dict(overrides.pop("state", {}))}
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": kafka_bootstrap,
            "redis_url": redis_url,
            "consumer_group": f"{unique_prefix}-group",
            "log_format": "console",
            "run_dir": tmp_path / "run",
            "topics": topics,
            "state": state,
            **overrides,
        }
        return Settings(**values)

    return make


@pytest.fixture
async def pipeline_settings(settings_factory: SettingsFactory) -> Settings:
    """Isolated settings whose topics already exist on the broker."""
    settings = settings_factory()
    await ensure_topics(settings)
    return settings


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value)
