"""Produces a handler's records and waits until the broker acknowledged every one.

The producer is idempotent where the cluster grants producer ids (Apache Kafka; not Tansu), so a
produce request retried after a lost answer never writes a record twice or out of order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from agentstream.config import Settings
from agentstream.processors.base import Outbound
from agentstream.streams.idempotence import idempotence_kwargs
from agentstream.streams.kafka_config import client_kwargs


class Publisher:
    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self._settings = settings
        self._kwargs: dict[str, Any] = {
            **client_kwargs(settings),
            "acks": "all",
            "linger_ms": 0,
            "request_timeout_ms": int(settings.timeouts.kafka_request_s * 1000),
            **overrides,
        }
        self._producer: AIOKafkaProducer | None = None

    @property
    def idempotent(self) -> bool:
        return bool(self._kwargs.get("enable_idempotence"))

    async def start(self) -> None:
        if self._producer is not None:
            return
        if "enable_idempotence" not in self._kwargs:
            self._kwargs.update(await idempotence_kwargs(self._settings))
        self._producer = AIOKafkaProducer(**self._kwargs)
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def enqueue(self, record: Outbound) -> asyncio.Future[Any]:
        """Hand one record to the producer without waiting for the broker; the returned future
        completes with its acknowledgement (token stream deltas: the model call goes on)."""
        if self._producer is None:
            raise RuntimeError("Publisher.enqueue() before start()")
        future: asyncio.Future[Any] = await self._producer.send(
            record.topic, value=record.value, key=record.key, headers=record.headers or None
        )
        return future

    async def publish(self, records: list[Outbound]) -> None:
        """Send all records (in order per partition) and wait for every broker acknowledgement.

        On failure, raises the first error only after every record already handed to the
        producer has its outcome (no delivery future is left with an unretrieved error)."""
        if self._producer is None:
            raise RuntimeError("Publisher.publish() before start()")
        futures: list[asyncio.Future[Any]] = []
        failed: BaseException | None = None
        try:
            for r in records:
                futures.append(
                    await self._producer.send(
                        r.topic, value=r.value, key=r.key, headers=r.headers or None
                    )
                )
        except Exception as exc:  # noqa: BLE001 - raised below, after the sent ones settle
            failed = exc
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            raise errors[0]
        if failed is not None:
            raise failed
