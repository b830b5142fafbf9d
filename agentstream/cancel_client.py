"""Client side of cancellation: send a CancelRequest and learn what it did.

:func:`send_cancel` publishes the cancel request (topic ``topics.control``, keyed by request id)
and, unless told not to wait, watches for its outcome: the request's response (``CANCELLED``,
or another state when the request finished first) on the responses the :class:`AgentClient`
reads, or the no-op report on ``topics.errors`` (``CANCEL_TOO_LATE`` / ``CANCEL_UNKNOWN_REQUEST``,
whose message begins ``cancel <cancel_id>:``). The errors topic is read only while waiting, by a
consumer that exists for that wait. ``AgentClient.cancel`` is the method to call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agentstream.config import Settings
from agentstream.exceptions import ErrorCode
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import CancelRequest, ErrorEvent
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.partitions import all_partitions

if TYPE_CHECKING:
    from agentstream.client import AgentResponse


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    """The request was stopped: its response has state CANCELLED."""
    FINISHED = "finished"
    """Nothing to stop: the request had finished (its response is elsewhere, or ``response``)."""
    UNKNOWN = "unknown"
    """Nothing to stop: no such request was accepted (yet): a cancel sent before its request
    was taken; send it again to be sure."""
    NOT_SEEN = "not_seen"
    """No outcome seen within the wait (or not waited for)."""


@dataclass(frozen=True, kw_only=True)
class CancelResult:
    cancel_id: str
    request_id: str
    outcome: CancelOutcome
    response: AgentResponse | None = None
    """The request's response, when it arrived during the wait."""
    seconds: float = 0.0
    """From sending the cancel to seeing its outcome."""


_NOOP_CODES = {
    ErrorCode.CANCEL_TOO_LATE: CancelOutcome.FINISHED,
    ErrorCode.CANCEL_UNKNOWN_REQUEST: CancelOutcome.UNKNOWN,
}


def new_cancel(
    request_id: str,
    *,
    tenant_id: str,
    requested_by: str,
    reason: str | None = None,
    session_id: str | None = None,
) -> CancelRequest:
    return CancelRequest(
        cancel_id=uuid.uuid4().hex,
        request_id=request_id,
        tenant_id=tenant_id,
        requested_by=requested_by,
        reason=reason,
        session_id=session_id,
        created_at=datetime.now(UTC),
    )


async def send_cancel(
    settings: Settings,
    codec: AvroCodec,
    producer: AIOKafkaProducer,
    cancel: CancelRequest,
    responses: AsyncIterator[AgentResponse] | None,
    *,
    wait_s: float,
) -> CancelResult:
    """Publish ``cancel``; with ``wait_s`` > 0 wait that long for its outcome."""
    value = codec.encode_record(cancel)
    key = cancel.request_id.encode()
    if wait_s <= 0:
        await producer.send_and_wait(settings.topics.control, value=value, key=key)
        return CancelResult(
            cancel_id=cancel.cancel_id, request_id=cancel.request_id, outcome=CancelOutcome.NOT_SEEN
        )
    async with _errors_reader(settings) as errors:
        started = time.monotonic()
        await producer.send_and_wait(settings.topics.control, value=value, key=key)
        watchers: list[Any] = [_noop_report(codec, errors, cancel)]
        if responses is not None:
            watchers.append(_response_of(responses, cancel.request_id))
        result = await _first(watchers, wait_s)
    seconds = time.monotonic() - started
    if isinstance(result, CancelOutcome):
        return CancelResult(
            cancel_id=cancel.cancel_id,
            request_id=cancel.request_id,
            outcome=result,
            seconds=seconds,
        )
    outcome = CancelOutcome.NOT_SEEN
    if result is not None:
        cancelled = result.state == "CANCELLED"
        outcome = CancelOutcome.CANCELLED if cancelled else CancelOutcome.FINISHED
    return CancelResult(
        cancel_id=cancel.cancel_id,
        request_id=cancel.request_id,
        outcome=outcome,
        response=result,
        seconds=seconds,
    )


async def _first(watchers: list[Any], wait_s: float) -> Any:
    """The first watcher's result within ``wait_s`` (None when none finished)."""
    tasks = [asyncio.ensure_future(w) for w in watchers]
    try:
        done, _ = await asyncio.wait(tasks, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        return next(iter(done)).result() if done else None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _response_of(responses: AsyncIterator[AgentResponse], request_id: str) -> AgentResponse:
    async for response in responses:
        if response.request_id == request_id:
            return response
    raise asyncio.CancelledError  # the stream ended (the client stopped)


async def _noop_report(
    codec: AvroCodec, errors: AIOKafkaConsumer, cancel: CancelRequest
) -> CancelOutcome:
    prefix = f"cancel {cancel.cancel_id}:"
    while True:
        batches = await errors.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                with contextlib.suppress(SerializationError):
                    event = codec.decode_record(ErrorEvent, record.value or b"")
                    if event.code in _NOOP_CODES and event.message.startswith(prefix):
                        return _NOOP_CODES[ErrorCode(event.code)]


@contextlib.asynccontextmanager
async def _errors_reader(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer at the end of every partition of the errors topic (no group)."""
    consumer = AIOKafkaConsumer(
        **client_kwargs(settings),
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        topic = settings.topics.errors
        tps = await all_partitions(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:  # positions resolved before the cancel is sent
            await consumer.position(tp)
        yield consumer
    finally:
        await consumer.stop()
