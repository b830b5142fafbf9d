"""Shared fixtures: a real Kafka-protocol broker and a real Redis for the whole session.

Where they come from, first match wins:

1. ``AGENTSTREAM_TEST_KAFKA`` / ``AGENTSTREAM_TEST_REDIS`` (``host:port`` / ``redis://...``);
2. ``--kafka=container`` with a working Docker engine: apache/kafka (KRaft) and redis:7 via
   testcontainers;
3. otherwise (the default, ``--kafka=embedded``): the embedded Tansu broker and ``redis-server``
   from the wheels, on free loopback ports, stopped at session end.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agentstream.config import Settings, TopicSettings
from agentstream.embedded import EmbeddedKafka, EmbeddedRedis, EmbeddedRedisCluster
from agentstream.embedded.process import free_port
from agentstream.streams.admin import ensure_topics

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7-alpine"
_TOPIC_NAME_FIELDS = ("requests", "generation", "tool_calls", "responses", "errors", "metrics")

SettingsFactory = Callable[..., Settings]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka",
        choices=("embedded", "container"),
        default="embedded",
        help="Broker and Redis for integration tests: embedded binaries (default) or "
        "testcontainers (needs Docker; falls back to embedded without it).",
    )
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
    config.stash[_CONTAINERS] = config.getoption("--kafka") == "container" and _docker_works()


def pytest_report_header(config: pytest.Config) -> list[str]:
    wanted = config.getoption("--kafka")
    used = "container" if config.stash[_CONTAINERS] else "embedded"
    note = "" if wanted == used else " (no Docker engine reachable)"
    kafka = os.environ.get("AGENTSTREAM_TEST_KAFKA") or used
    redis = os.environ.get("AGENTSTREAM_TEST_REDIS") or (
        "embedded-cluster" if config.getoption("--redis") == "cluster" else used
    )
    return [f"agentstream backends: kafka={kafka}, redis={redis}{note}"]


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
def _kafka_container() -> Iterator[str]:
    """apache/kafka in KRaft mode, advertised on a host port chosen before start.

    testcontainers' ``KafkaContainer`` drives Confluent's start scripts and cannot run the
    apache/kafka image, so this uses a generic container configured like docker-compose.yml.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    host = os.environ.get("TC_HOST", "localhost")
    port = free_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, port)
        .with_env("CLUSTER_ID", "ziRU-galSvG2USJS0cSWhw")  # a base64 UUID, as KRaft requires
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENERS", "INTERNAL://:19092,CONTROLLER://:9093,HOST://:9092")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"INTERNAL://localhost:19092,HOST://{host}:{port}")
        .with_env(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
            "INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT",
        )
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "INTERNAL")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
    )
    with container:
        yield f"{host}:{port}"


@contextmanager
def _redis_container() -> Iterator[str]:
    from testcontainers.community.redis import RedisContainer

    with RedisContainer(REDIS_IMAGE) as container:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(container.port)
        yield f"redis://{host}:{port}/0"


# --- session fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for the whole session."""
    from_env = os.environ.get("AGENTSTREAM_TEST_KAFKA")
    if from_env:
        yield from_env
    elif request.config.stash[_CONTAINERS]:
        with _kafka_container() as address:
            yield address
    else:
        with EmbeddedKafka(run_dir=tmp_path_factory.mktemp("tansu")) as kafka:
            yield kafka.address


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
def unique_prefix() -> str:
    """A short, unique, topic-safe prefix such as ``t1a2b3c``."""
    return f"t{uuid.uuid4().hex[:6]}"


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str, redis_url: str, unique_prefix: str, tmp_path: Path
) -> SettingsFactory:
    """``settings_factory(**overrides) -> Settings`` isolated by ``unique_prefix``.

    Topic names become ``<prefix>.<default name>``, partitions default to 4, the consumer group
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
