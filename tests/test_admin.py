"""Kafka client configuration (no broker needed) and topic administration (real broker)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import certifi
import faust
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from agentstream.config import KafkaSecurity, Settings
from agentstream.exceptions import ConfigError
from agentstream.streams.admin import (
    KafkaUnavailableError,
    admin_client,
    ensure_topics,
    list_topics,
)
from agentstream.streams.kafka_config import client_kwargs, faust_broker_kwargs
from agentstream.streams.topology import pipeline_topics

SettingsFactory = Callable[..., Settings]


def _settings(**values: Any) -> Settings:
    return Settings(kafka_bootstrap_servers="k1:9092, k2:9093", **values)


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=agentstream-test", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# --- aiokafka keyword args --------------------------------------------------------------------


def test_plaintext_maps_to_bootstrap_and_protocol_only() -> None:
    assert client_kwargs(_settings()) == {
        "bootstrap_servers": "k1:9092,k2:9093",
        "security_protocol": "PLAINTEXT",
    }


def test_missing_bootstrap_servers_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS"):
        client_kwargs(Settings(kafka_bootstrap_servers=None))


async def test_sasl_scram_from_flat_aliases() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret",
    )
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert "ssl_context" not in kwargs
    await AIOKafkaAdminClient(**kwargs).close()  # aiokafka accepts every key


def test_sasl_defaults_to_plain_mechanism() -> None:
    security = KafkaSecurity(
        security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="p"
    )
    assert client_kwargs(_settings(kafka_security=security))["sasl_mechanism"] == "PLAIN"


def test_sasl_without_password_is_a_config_error() -> None:
    settings = _settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u")
    with pytest.raises(ConfigError, match="sasl_password"):
        client_kwargs(settings)


async def test_sasl_ssl_builds_a_verifying_tls_context() -> None:
    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile=Path(certifi.where()),
    )
    kwargs = client_kwargs(_settings(kafka_security=security))
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    await AIOKafkaAdminClient(**kwargs).close()


def test_ssl_with_client_certificate(client_cert: tuple[Path, Path]) -> None:
    cert, key = client_cert
    settings = _settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=cert,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SSL"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in kwargs


def test_unreadable_tls_file_is_a_config_error(tmp_path: Path) -> None:
    settings = _settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="TLS"):
        client_kwargs(settings)


def test_certfile_without_keyfile_is_a_config_error(client_cert: tuple[Path, Path]) -> None:
    settings = _settings(kafka_security_protocol="SSL", kafka_ssl_certfile=client_cert[0])
    with pytest.raises(ConfigError, match="together"):
        client_kwargs(settings)


# --- Faust App kwargs -------------------------------------------------------------------------


def test_faust_plaintext_has_broker_urls_and_no_credentials() -> None:
    assert faust_broker_kwargs(_settings()) == {"broker": "kafka://k1:9092;kafka://k2:9093"}


def test_faust_sasl_credentials() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="svc",
        kafka_sasl_password="s3cret",
    )
    credentials = faust_broker_kwargs(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert (credentials.username, credentials.password) == ("svc", "s3cret")
    assert "s3cret" not in repr(credentials)


def test_faust_sasl_ssl_credentials_carry_a_tls_context() -> None:
    settings = _settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="p"
    )
    credentials = faust_broker_kwargs(settings)["broker_credentials"]
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


def test_faust_ssl_credentials() -> None:
    settings = _settings(kafka_security_protocol="SSL", kafka_ssl_cafile=Path(certifi.where()))
    credentials = faust_broker_kwargs(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"


# --- topic administration on a real broker -----------------------------------------------------


async def test_unreachable_cluster_is_a_retriable_project_error(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", run_dir=tmp_path)
    with pytest.raises(KafkaUnavailableError, match="failed") as caught:
        await list_topics(settings)
    assert caught.value.retriable


@pytest.mark.integration
async def test_ensure_topics_is_idempotent(settings_factory: SettingsFactory) -> None:
    settings = settings_factory()
    wanted = pipeline_topics(settings)

    assert sorted(await ensure_topics(settings)) == sorted(wanted)
    assert await ensure_topics(settings) == []

    topics = await list_topics(settings)
    assert {name: topics[name] for name in wanted} == dict.fromkeys(wanted, 4)


@pytest.mark.integration
async def test_ensure_topics_creates_only_the_given_topics(
    settings_factory: SettingsFactory, unique_prefix: str
) -> None:
    settings = settings_factory(topics={"partitions": 3})
    extra = f"{unique_prefix}.extra"

    created = await ensure_topics(settings, [settings.topics.requests, extra, extra])

    assert sorted(created) == sorted([settings.topics.requests, extra])
    topics = await list_topics(settings)
    assert topics[extra] == 3
    assert topics[settings.topics.requests] == 3
    assert settings.topics.responses not in topics


@pytest.mark.integration
async def test_existing_topic_keeps_its_partition_count(
    settings_factory: SettingsFactory, unique_prefix: str
) -> None:
    name = f"{unique_prefix}.fixed"
    assert await ensure_topics(settings_factory(topics={"partitions": 2}), [name]) == [name]

    assert await ensure_topics(settings_factory(topics={"partitions": 6}), [name]) == []

    assert (await list_topics(settings_factory()))[name] == 2


@pytest.mark.integration
async def test_pipeline_settings_fixture_has_its_topics(pipeline_settings: Settings) -> None:
    topics = await list_topics(pipeline_settings)
    assert set(pipeline_topics(pipeline_settings)) <= set(topics)


@pytest.mark.integration
async def test_created_topics_are_led_and_replicated_when_ensure_topics_returns(
    settings_factory: SettingsFactory, kafka_replication_factor: int
) -> None:
    """Apache Kafka lists a new topic before it elects the partitions' leaders; a client reading
    offsets in between got NotLeaderForPartition. ensure_topics returns only once all are led."""
    settings = settings_factory(topics={"partitions": 8})
    created = await ensure_topics(settings)
    async with admin_client(settings) as admin:
        described = await admin.describe_topics(created)  # at once: no waiting here
    partitions = [p for topic in described for p in topic["partitions"]]
    assert len(partitions) == 8 * len(created)
    assert all(p["leader"] >= 0 for p in partitions), partitions
    assert {len(p["replicas"]) for p in partitions} == {kafka_replication_factor}
