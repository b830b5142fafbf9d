"""The broker's record size limit: detected once at start-up, checked before every publish.

A record larger than the broker accepts can never be delivered, however often it is retried. The
worker therefore reads the limit once when it starts: the smallest ``max.message.bytes`` of the
topics it produces to, else the broker's ``message.max.bytes`` (Kafka reports the effective value
of each topic), else the setting ``kafka.max_message_bytes``
(``AGENTSTREAM_KAFKA__MAX_MESSAGE_BYTES``, default 1 MiB) when the broker reports neither (Tansu
answers DescribeConfigs with no entries).
The producer's ``max_request_size`` is set to the same value, and the stage runner measures every
output record with the producer's own estimate (key, value, headers and the record batch overhead)
before it sends anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError, ErrorCode
from agentstream.observability.logging import get_logger
from agentstream.processors.base import Outbound
from agentstream.streams.admin import admin_client
from agentstream.streams.topology import pipeline_topics

TOPIC_LIMIT = "max.message.bytes"
BROKER_LIMIT = "message.max.bytes"
SETTING = "AGENTSTREAM_KAFKA__MAX_MESSAGE_BYTES"
_DETECT_TIMEOUT_S = 10.0
log = get_logger(__name__)


class OutputTooLargeError(AgentStreamError):
    """An output record is larger than the broker accepts: it can never be delivered."""

    code = ErrorCode.OUTPUT_TOO_LARGE
    retriable = False

    def __init__(self, topic: str, size: int, limit: int) -> None:
        super().__init__(
            f"a record for {topic} is {size} bytes; the broker accepts at most {limit} "
            f"(the topic's {TOPIC_LIMIT})"
        )
        self.topic = topic
        self.size = size
        self.limit = limit


@dataclass(frozen=True, kw_only=True)
class SizeLimit:
    """The largest record (as the producer measures it) the worker may publish."""

    max_bytes: int
    source: Literal["broker", "setting"]

    def fits(self, record: Outbound) -> bool:
        return record_size(record) <= self.max_bytes


def record_size(record: Outbound) -> int:
    """The producer's upper-bound estimate of ``record`` in a batch of its own, in bytes (the
    same estimate aiokafka compares with ``max_request_size``)."""
    size: int = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        record.key, record.value, list(record.headers)
    )
    return size


async def detect_size_limit(settings: Settings, topics: Iterable[str] | None = None) -> SizeLimit:
    """The record size limit for producing to ``topics`` (default: every pipeline topic).

    Asked once at start-up. Any failure to ask (old broker, no DescribeConfigs permission, a
    broker that does not report the configs) falls back to the setting, with one log line."""
    names = list(dict.fromkeys(pipeline_topics(settings) if topics is None else topics))
    fallback = SizeLimit(max_bytes=settings.kafka.max_message_bytes, source="setting")
    try:
        async with asyncio.timeout(min(_DETECT_TIMEOUT_S, settings.timeouts.kafka_request_s)):
            reported = await _broker_limit(settings, names)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the setting
        log.warning(
            "cannot read the broker's record size limit; using the setting",
            error=type(exc).__name__,
            max_message_bytes=fallback.max_bytes,
            setting=SETTING,
        )
        return fallback
    if reported is None:
        log.info(
            "broker does not report its record size limit; using the setting",
            max_message_bytes=fallback.max_bytes,
            setting=SETTING,
        )
        return fallback
    log.info("record size limit read from the broker", max_message_bytes=reported)
    return SizeLimit(max_bytes=reported, source="broker")


async def _broker_limit(settings: Settings, topics: list[str]) -> int | None:
    """The smallest limit of ``topics``; a topic that reports none is held to the broker's
    ``message.max.bytes``, else to the setting. None when nothing reports a limit."""
    async with admin_client(settings) as admin:
        # no config-name filter: Tansu drops the connection on a filtered DescribeConfigs
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        )
        limits = config_values(responses, TOPIC_LIMIT)
        if len(limits) >= len(topics):
            return min(limits)
        broker = await _broker_default(admin)
    if broker is None and not limits:
        return None
    rest = broker if broker is not None else settings.kafka.max_message_bytes
    return min([*limits, rest])


async def _broker_default(admin: Any) -> int | None:
    brokers = sorted(b.nodeId for b in admin._client.cluster.brokers())
    if not brokers:
        return None
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, str(brokers[0]))]
    )
    limits = config_values(responses, BROKER_LIMIT)
    return min(limits) if limits else None


def config_values(responses: list[Any], name: str) -> list[int]:
    """Integer values of config ``name`` in DescribeConfigs responses (resources with an error
    are skipped). Entries are ``(name, value, read_only, ...)`` in every protocol version."""
    found: list[int] = []
    for response in responses:
        for resource in response.resources:
            error_code, entries = resource[0], resource[4]
            if error_code != 0:
                continue
            for entry in entries:
                if entry[0] == name and entry[1] is not None:
                    try:
                        value = int(entry[1])
                    except ValueError:
                        continue
                    if value > 0:
                        found.append(value)
    return found
