"""Kafka connection settings as client arguments: aiokafka keyword args and Faust App kwargs.

The returned dicts hold the SASL password in clear text (the clients need it): never log them.
"""

from __future__ import annotations

import ssl
from typing import Any

from agentstream.config import KafkaSecurity, Settings
from agentstream.exceptions import ConfigError

_SSL_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def bootstrap_hosts(settings: Settings) -> list[str]:
    """``host:port`` entries of ``kafka_bootstrap_servers`` (comma-separated, blanks dropped)."""
    raw = settings.kafka_bootstrap_servers
    hosts = [h.strip() for h in (raw or "").split(",") if h.strip()]
    if not hosts:
        raise ConfigError(
            "no Kafka bootstrap servers configured: set AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS "
            "(or run `agentstream dev`, which starts a local broker)"
        )
    return hosts


def client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword args for ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` / ``AIOKafkaAdminClient``."""
    security = settings.effective_security()
    kwargs: dict[str, Any] = {
        "bootstrap_servers": ",".join(bootstrap_hosts(settings)),
        "security_protocol": security.security_protocol,
    }
    if security.security_protocol in _SSL_PROTOCOLS:
        kwargs["ssl_context"] = ssl_context(security)
    if security.security_protocol in _SASL_PROTOCOLS:
        username, password = _sasl_user(security)
        kwargs["sasl_mechanism"] = security.sasl_mechanism or "PLAIN"
        kwargs["sasl_plain_username"] = username
        kwargs["sasl_plain_password"] = password
    return kwargs


def faust_broker_kwargs(settings: Settings) -> dict[str, Any]:
    """``broker`` and, when security is configured, ``broker_credentials`` for ``faust.App``."""
    import faust  # heavy import, only for callers that build a Faust app

    kwargs: dict[str, Any] = {
        "broker": ";".join(f"kafka://{host}" for host in bootstrap_hosts(settings)),
    }
    security = settings.effective_security()
    protocol = security.security_protocol
    if protocol in _SASL_PROTOCOLS:
        username, password = _sasl_user(security)
        kwargs["broker_credentials"] = faust.SASLCredentials(
            username=username,
            password=password,
            mechanism=security.sasl_mechanism or "PLAIN",
            ssl_context=ssl_context(security) if protocol == "SASL_SSL" else None,
        )
    elif protocol == "SSL":
        kwargs["broker_credentials"] = faust.SSLCredentials(ssl_context(security))
    return kwargs


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: the CA file if given (else system CAs), and a client cert if given."""
    from aiokafka.helpers import create_ssl_context

    if (security.ssl_certfile is None) != (security.ssl_keyfile is None):
        raise ConfigError("ssl_certfile and ssl_keyfile must be given together")
    password = security.ssl_password.get_secret_value() if security.ssl_password else None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=security.ssl_cafile,
            certfile=security.ssl_certfile,
            keyfile=security.ssl_keyfile,
            password=password,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the Kafka TLS files: {exc}") from exc
    return context


def _sasl_user(security: KafkaSecurity) -> tuple[str, str]:
    if not security.sasl_username or security.sasl_password is None:
        raise ConfigError(
            f"security protocol {security.security_protocol} needs sasl_username and "
            "sasl_password (AGENTSTREAM_KAFKA_SASL_USERNAME / AGENTSTREAM_KAFKA_SASL_PASSWORD)"
        )
    return security.sasl_username, security.sasl_password.get_secret_value()
