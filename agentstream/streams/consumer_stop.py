"""Stopping an aiokafka consumer when the broker may be gone.

``AIOKafkaConsumer.stop()`` cancels the fetch requests it has pending and awaits them. A fetch
whose request failed because the broker is gone sleeps out its retry backoff outside the handler
that swallows cancellation, so the cancellation comes back out of ``stop()`` (aiokafka 0.14:
``Fetcher.close``). The stopping task was not cancelled itself; taken at face value, that
``CancelledError`` ends the worker's whole shutdown with a traceback instead of the bounded,
orderly exit. :func:`stop_consumer` tells the two apart: only a cancel of the stopping task
itself goes on.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer

from agentstream.observability.logging import get_logger

log = get_logger(__name__)


async def stop_consumer(consumer: AIOKafkaConsumer, *, name: str) -> None:
    """``consumer.stop()``, keeping the cancellation of a fetch it had pending from escaping
    (``name``: which consumer, for the warning)."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("kafka consumer stopped with a fetch pending", consumer=name)
