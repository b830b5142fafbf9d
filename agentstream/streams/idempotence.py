"""Whether the cluster grants idempotent producers, asked once per process and bootstrap list.

Apache Kafka answers ``InitProducerId`` with a producer id, so producers there run with
``enable_idempotence``: a retried produce request cannot write a record twice or out of order.
Tansu advertises the API but answers ``UnknownServerError``, and brokers that do not list it in
``ApiVersions`` cannot do it either: producers stay plain there. Nobody sets this by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.protocol.transaction import InitProducerIdRequest

from agentstream.config import Settings
from agentstream.streams.kafka_config import client_kwargs

log = logging.getLogger(__name__)

_ANSWERS: dict[str, bool] = {}
_RETRY_S = 0.2
_TRANSACTION_TIMEOUT_MS = 60_000


async def idempotence_supported(settings: Settings) -> bool:
    """``True`` when a broker of ``settings``' cluster hands out producer ids (cached)."""
    key = settings.kafka_bootstrap_servers or ""
    if key not in _ANSWERS:  # concurrent first callers may each ask: harmless
        answer = await _ask(settings)
        if answer is None:
            return False
        _ANSWERS[key] = answer
    return _ANSWERS[key]


async def idempotence_kwargs(settings: Settings) -> dict[str, Any]:
    """``{"enable_idempotence": True}`` for an ``AIOKafkaProducer`` where the cluster allows it."""
    return {"enable_idempotence": True} if await idempotence_supported(settings) else {}


async def _ask(settings: Settings) -> bool | None:
    """The broker's answer; ``None`` when it could not be asked (not cached: ask again later)."""
    timeout_s = settings.timeouts.kafka_request_s
    client = AIOKafkaClient(
        **client_kwargs(settings),
        client_id="agentstream-idempotence-probe",
        request_timeout_ms=int(timeout_s * 1000),
    )
    deadline = time.monotonic() + timeout_s
    try:
        await client.bootstrap()
        while True:
            node_id = client.get_random_node()
            response = await client.send(
                node_id,
                InitProducerIdRequest(
                    transactional_id=None,  # nullable on the wire: no transactions
                    transaction_timeout_ms=_TRANSACTION_TIMEOUT_MS,
                ),
            )
            error = for_code(response.error_code)
            if response.error_code == 0:
                log.info("Kafka grants idempotent producers: enable_idempotence on")
                return True
            if not error.retriable or time.monotonic() > deadline:
                log.info(
                    "Kafka refuses idempotent producers (%s): enable_idempotence off",
                    error.__name__,
                )
                return False
            await asyncio.sleep(_RETRY_S)
    except KafkaError as exc:
        if "InitProducerId" in str(exc) or "not supported" in str(exc).lower():
            return False
        log.warning("could not ask Kafka about idempotent producers (%s): off for now", exc)
        return None
    finally:
        with contextlib.suppress(KafkaError, OSError):
            await client.close()
