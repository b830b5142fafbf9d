"""docker-compose.yml offers a KRaft Kafka and Redis 7 with health checks, and (profile "stack")
workers, Prometheus and Grafana wired to deploy/."""

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


# --- the "stack" profile: workers, Prometheus and Grafana -------------------------------------

ROOT = COMPOSE_FILE.parent
STACK = ("topics", "worker", "prometheus", "grafana")


def test_the_stack_is_behind_a_profile_so_plain_up_stays_infrastructure(
    services: dict[str, Any],
) -> None:
    for name in STACK:
        assert services[name]["profiles"] == ["stack"]
    for name in ("kafka", "redis"):
        assert "profiles" not in services[name]


def test_workers_use_the_image_the_internal_listener_and_the_health_endpoint(
    services: dict[str, Any],
) -> None:
    from agentstream.cli.worker import STOP_MARGIN_S

    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
    env = _environment(worker)
    assert env["AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"  # INTERNAL listener
    assert env["AGENTSTREAM_REDIS_URL"].startswith("redis://redis:6379")
    assert "/readyz" in _healthcheck_command(worker)
    assert env["AGENTSTREAM_METRICS_PORT"] in _healthcheck_command(worker)
    grace = float(env["AGENTSTREAM_TIMEOUTS__SHUTDOWN_GRACE_S"]) + STOP_MARGIN_S
    assert worker["stop_grace_period"] == f"{grace:g}s"
    assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["command"] == ["topics", "create"]


def test_prometheus_scrapes_the_workers_and_loads_the_rules(services: dict[str, Any]) -> None:
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in services["prometheus"]["volumes"])
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        source = next(src for src, dest in mounts.items() if dest == rule_file)
        assert (ROOT / source).is_file()
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert str(sd["port"]) == _environment(services["worker"])["AGENTSTREAM_METRICS_PORT"]


def test_grafana_is_provisioned_with_the_dashboard(services: dict[str, Any]) -> None:
    mounts = dict(v.removesuffix(":ro").split(":", 1) for v in services["grafana"]["volumes"])
    assert (ROOT / "deploy/grafana/dashboards/agentstream.json").is_file()
    providers = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/agentstream.yml").read_text()
    )["providers"]
    path = providers[0]["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == path
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
