"""Topic administration: create the pipeline's topics (idempotently) and list what exists.

Topics are looked up through an all-topics metadata request only: a metadata request that names a
missing topic makes brokers with auto-creation on (Tansu, and Kafka's default) create it with
their default partition count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError, ErrorCode
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.topology import pipeline_topics

log = logging.getLogger(__name__)

_VISIBLE_POLL_S = 0.05


class TopicAdminError(AgentStreamError):
    """The broker refused a topic request, or a created topic never showed up in metadata."""

    code = ErrorCode.TOPIC_ADMIN_ERROR
    retriable = False


class KafkaUnavailableError(TopicAdminError):
    """The cluster could not be reached or timed out; trying again later may work."""

    code = ErrorCode.KAFKA_UNAVAILABLE
    retriable = True


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[Any]:
    """A started ``AIOKafkaAdminClient`` for ``settings``, closed on exit.

    aiokafka errors inside the block become :class:`KafkaUnavailableError` (retriable ones, e.g.
    connection failures) or :class:`TopicAdminError`.
    """
    client = AIOKafkaAdminClient(
        **client_kwargs(settings),
        client_id="agentstream-admin",
        request_timeout_ms=int(settings.timeouts.kafka_request_s * 1000),
    )
    try:
        await client.start()
        yield client
    except KafkaError as exc:
        kind = KafkaUnavailableError if exc.retriable else TopicAdminError
        raise kind(
            f"Kafka admin request to {settings.kafka_bootstrap_servers} failed: {exc}"
        ) from exc
    finally:
        await client.close()


async def list_topics(settings: Settings) -> dict[str, int]:
    """Every non-internal topic on the cluster mapped to its partition count."""
    async with admin_client(settings) as admin:
        return await _partition_counts(admin)


async def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create the missing ones of ``topics`` (default: every pipeline topic); return those created.

    New topics get ``settings.topics.partitions`` partitions and the configured replication
    factor. Topics that already exist are left alone (a differing partition count is logged).
    """
    names = list(dict.fromkeys(pipeline_topics(settings) if topics is None else topics))
    partitions = settings.topics.partitions
    async with admin_client(settings) as admin:
        existing = await _partition_counts(admin)
        for name in names:
            if name in existing and existing[name] != partitions:
                log.warning(
                    "topic %s has %d partitions, settings ask for %d; leaving it as it is",
                    name,
                    existing[name],
                    partitions,
                )
        missing = [name for name in names if name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=settings.topics.replication_factor,
                )
                for name in missing
            ]
        )
        created = _created_topics(response.topic_errors)
        await _wait_visible(admin, created, settings.timeouts.kafka_request_s)
    if created:
        log.info("created %d topic(s) with %d partitions: %s", len(created), partitions, created)
    return created


async def _partition_counts(admin: Any) -> dict[str, int]:
    described = await admin.describe_topics()  # no names: never auto-creates anything
    return {
        topic["topic"]: len(topic["partitions"])
        for topic in described
        if not topic.get("is_internal") and topic.get("error_code", 0) == 0
    }


def _created_topics(topic_errors: list[tuple[Any, ...]]) -> list[str]:
    created: list[str] = []
    failures: list[str] = []
    for entry in topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:  # lost a race with another creator: fine
            failures.append(f"{name}: {for_code(code).__name__} {message or ''}".rstrip())
    if failures:
        raise TopicAdminError("could not create topic(s): " + "; ".join(failures))
    return created


async def _wait_visible(admin: Any, names: list[str], timeout_s: float) -> None:
    """Wait until metadata lists every topic in ``names`` with a leader for every partition.

    Real Kafka propagates new topics asynchronously and elects leaders after that: a client that
    reads offsets of a partition without a leader gets ``NotLeaderForPartition``.
    """
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        pending -= await _led_topics(admin)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"created topics not ready (visible, every partition led) after {timeout_s:g}s: "
                f"{sorted(pending)}"
            )
        await asyncio.sleep(_VISIBLE_POLL_S)


async def _led_topics(admin: Any) -> set[str]:
    """Topics whose every partition has a leader."""
    described = await admin.describe_topics()
    return {
        topic["topic"]
        for topic in described
        if topic.get("error_code", 0) == 0
        and topic["partitions"]
        and all(
            p.get("error_code", 0) == 0 and p.get("leader", -1) >= 0 for p in topic["partitions"]
        )
    }
