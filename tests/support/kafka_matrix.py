"""The Kafka side of the test matrix: ``--kafka=tansu|apache|apache-cluster|container``.

Hooks and fixtures here are imported into ``tests/conftest.py`` (the Redis side lives there).

- ``tansu`` (default; ``embedded`` is an old alias): the embedded Tansu broker from the wheel.
- ``apache``: one Apache Kafka 4 node (broker + KRaft controller), Java and Maven needed.
- ``apache-cluster``: three Apache Kafka nodes; topics get replication factor 3
  (``min.insync.replicas=2``). The fault tests run only here; ``kafka_cluster`` hands them the
  cluster so they can kill and restart brokers.
- ``container``: apache/kafka via testcontainers when Docker works, else Tansu.

``AGENTSTREAM_TEST_KAFKA=host:port`` overrides all of them (an external broker).

``@pytest.mark.kafka_matrix("apache-cluster", ...)`` limits a test to those matrices; it is
deselected (not skipped) elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pytest

from agentstream.embedded import ApacheKafka, EmbeddedKafka
from agentstream.embedded.process import free_port

KafkaKind = Literal["tansu", "apache", "apache-cluster", "container", "external"]

KAFKA_IMAGE = "apache/kafka:3.9.1"
_CHOICES = ("tansu", "embedded", "apache", "apache-cluster", "container")
_KIND = pytest.StashKey[str]()


def add_kafka_option(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kafka",
        choices=_CHOICES,
        default="tansu",
        help="Broker for integration tests: tansu (default; 'embedded' is an alias), apache "
        "(one Apache Kafka 4 node), apache-cluster (three nodes, RF 3; runs the fault tests), "
        "container (testcontainers; needs Docker, else tansu).",
    )


def configure_kafka(config: pytest.Config, docker_works: bool) -> None:
    wanted = config.getoption("--kafka")
    kind = "tansu" if wanted == "embedded" else wanted
    if kind == "container" and not docker_works:
        kind = "tansu"
    if os.environ.get("AGENTSTREAM_TEST_KAFKA"):
        kind = "external"
    config.stash[_KIND] = kind
    config.addinivalue_line(
        "markers",
        "kafka_matrix(*kinds): run only with --kafka=<one of kinds> (deselected otherwise)",
    )


def kafka_kind_of(config: pytest.Config) -> str:
    return config.stash[_KIND]


def kafka_header(config: pytest.Config) -> str:
    wanted = config.getoption("--kafka")
    kind = config.stash[_KIND]
    if kind == "external":
        return f"kafka=external ({os.environ.get('AGENTSTREAM_TEST_KAFKA')})"
    note = " (no Docker engine reachable)" if wanted == "container" and kind != wanted else ""
    return f"kafka={kind}{note}"


def deselect_other_matrices(config: pytest.Config, items: list[pytest.Item]) -> None:
    kind = config.stash[_KIND]
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("kafka_matrix")
        (keep if marker is None or kind in marker.args else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_kind(request: pytest.FixtureRequest) -> str:
    """Which broker the session runs on: tansu, apache, apache-cluster, container or external."""
    return kafka_kind_of(request.config)


@pytest.fixture(scope="session")
def kafka_replication_factor(kafka_kind: str) -> int:
    """Replication factor for the topics tests create (3 on the three-node cluster)."""
    return 3 if kafka_kind == "apache-cluster" else 1


@pytest.fixture(scope="session")
def kafka_cluster(
    kafka_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApacheKafka]:
    """The session's Apache Kafka (one node or three), for tests that kill and restart brokers."""
    if kafka_kind not in ("apache", "apache-cluster"):
        pytest.fail(f"kafka_cluster needs --kafka=apache or apache-cluster, not {kafka_kind}")
    nodes = 3 if kafka_kind == "apache-cluster" else 1
    with ApacheKafka(run_dir=tmp_path_factory.mktemp("apache-kafka"), nodes=nodes) as kafka:
        yield kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, kafka_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``host:port[,host:port...]`` of the session's Kafka broker(s)."""
    if kafka_kind == "external":
        yield os.environ["AGENTSTREAM_TEST_KAFKA"]
    elif kafka_kind in ("apache", "apache-cluster"):
        yield request.getfixturevalue("kafka_cluster").address
    elif kafka_kind == "container":
        with _kafka_container() as address:
            yield address
    else:
        with EmbeddedKafka(run_dir=tmp_path_factory.mktemp("tansu")) as kafka:
            yield kafka.address


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
        .with_env("KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS", "500")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
        .waiting_for(LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(120))
    )
    with container:
        yield f"{host}:{port}"
