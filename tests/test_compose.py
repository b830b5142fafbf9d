"""docker-compose.yml offers a KRaft Kafka and Redis 7 with health checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    result: dict[str, Any] = document["services"]
    return result


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def test_kafka_is_a_single_kraft_node_reachable_on_9092(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert "localhost:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert "ZOOKEEPER" not in " ".join(env)
    assert "9092:9092" in [str(port) for port in kafka["ports"]]


def test_kafka_has_a_healthcheck(services: dict[str, Any]) -> None:
    command = _healthcheck_command(services["kafka"])
    assert "kafka-topics.sh" in command or "kafka-broker-api-versions.sh" in command


def test_redis_7_on_6379_with_ping_healthcheck(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "6379:6379" in [str(port) for port in redis["ports"]]
    assert "redis-cli" in _healthcheck_command(redis)
    assert "ping" in _healthcheck_command(redis)
