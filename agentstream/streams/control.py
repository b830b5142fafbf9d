"""The control topic: cancel requests reach every worker.

A request's work may be on any worker: the one running its model call or tool batch (the owner
of its session's partition of that stage topic), the one holding its record in a retry tier, or
none (between stages). So every worker reads every partition of ``topics.control`` with a plain
aiokafka consumer **without a group** (nobody commits; a worker that starts reads the last
``cancel.window_s`` of it again, by timestamp), and for each cancel request:

1. asks Redis what the cancel found (state/cancels.py: decided once, by the first worker to ask,
   and the same answer for every other worker);
2. ``pending``: remembers the request as cancelled (processors/cancellation.py: every later stage
   event of it ends with the CANCELLED response, on any worker, with no Redis round trip) and
   stops its work running here now (the model call is aborted; tool calls not started are
   skipped; a side-effecting call that runs finishes and is journaled); the retry forwarder
   sends a held record of its session back at once, so a request waiting in a retry tier ends
   too;
3. ``finished`` / ``unknown``: nothing to stop; the worker that decided publishes an ErrorEvent
   ``CANCEL_TOO_LATE`` / ``CANCEL_UNKNOWN_REQUEST`` (no response: the request has its own, or
   none) and counts it in ``agentstream_cancel_requests``.

Why not a Redis flag checked by every stage: it would cost a round trip per stage event on every
request for a rare event; the in-memory set costs a dict lookup. Redis still holds the decision,
so all workers agree on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.config import Settings
from agentstream.exceptions import ErrorCode
from agentstream.observability import metrics
from agentstream.observability.logging import get_logger, log_safe_id
from agentstream.processors.base import Outbound, StageDeps
from agentstream.processors.cancellation import CancelNotice
from agentstream.processors.outcomes import Failure, error_event, response_id_for
from agentstream.processors.sanitize import valid_id
from agentstream.schemas.contracts import CancelRequest
from agentstream.schemas.exceptions import SerializationError
from agentstream.state.cancels import CancelDecision, CancelFinding, CancelStore
from agentstream.streams.consumer_stop import stop_consumer
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.partitions import all_partitions
from agentstream.streams.retry import RetryForwarder

log = get_logger(__name__)
STAGE = "control"
_NOOP = {
    CancelFinding.FINISHED: (
        ErrorCode.CANCEL_TOO_LATE,
        "the request already finished; nothing was cancelled",
    ),
    CancelFinding.UNKNOWN: (
        ErrorCode.CANCEL_UNKNOWN_REQUEST,
        "no such request has been accepted (yet); nothing was cancelled",
    ),
}


# The listener's fetch wait, at least: on a broker that holds a fetch for the whole wait (Tansu)
# a short wait costs idle CPU in every worker for every control partition, and a cancel may
# take this long more (its target is under a second). Apache Kafka answers a fetch as soon as
# data arrives, so there it costs nothing.
CONTROL_FETCH_WAIT_MS = 100

class CancelListener:
    def __init__(
        self,
        settings: Settings,
        *,
        deps: StageDeps,
        store: CancelStore,
        publish: Any,
        forwarder: RetryForwarder | None = None,
    ) -> None:
        self.settings = settings
        self._deps = deps
        self._store = store
        self._publish = publish
        self._forwarder = forwarder
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=max(settings.kafka.fetch_max_wait_ms, CONTROL_FETCH_WAIT_MS),
        )
        self._task: asyncio.Task[None] | None = None
        self.handled = 0

    async def start(self) -> None:
        """Read every partition of the control topic from ``cancel.window_s`` ago."""
        topic = self.settings.topics.control
        await self._consumer.start()
        tps = await all_partitions(self._consumer, topic)
        self._consumer.assign(tps)
        since_ms = int((time.time() - self.settings.cancel.window_s) * 1000)
        found = await self._consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        for tp in tps:
            at = found.get(tp)
            if at is None:
                await self._consumer.seek_to_end(tp)
            else:
                self._consumer.seek(tp, at.offset)
        await self._catch_up(tps)
        self._task = asyncio.get_running_loop().create_task(self._consume())

    async def _catch_up(self, tps: list[TopicPartition]) -> None:
        """Handle the window's cancels before the stages start taking records (bounded by
        ``startup.check_timeout_s``), so a record redelivered to this new worker finds its
        request's cancel known. The fetch high-water mark says where the end is (Tansu's
        ``end_offsets`` is wrong)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.startup.check_timeout_s
        while loop.time() < deadline:
            batches = await self._consumer.getmany(*tps, timeout_ms=200, max_records=500)
            for records in batches.values():
                for record in records:
                    await self._handle_record(record)
            if all([await self._at_end(tp) for tp in tps]):
                return
        log.warning("control topic not read to its end at start; continuing in the background")

    async def _at_end(self, tp: TopicPartition) -> bool:
        highwater = self._consumer.highwater(tp)
        return highwater is not None and await self._consumer.position(tp) >= highwater

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await stop_consumer(self._consumer, name="control")

    async def _consume(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=100)
            for records in batches.values():
                for record in records:
                    await self._handle_record(record)

    async def _handle_record(self, record: Any) -> None:
        msg = record
        try:
            cancel = self._deps.codec.decode_record(CancelRequest, record.value or b"")
        except SerializationError as exc:
            log.warning(
                "undecodable cancel request skipped", **_where(msg), error=type(exc).__name__
            )
            return
        ids = (cancel.cancel_id, cancel.request_id, cancel.tenant_id, cancel.session_id or "x")
        if not all(valid_id(i) for i in ids):  # no request has such ids: nothing to decide
            log.warning("cancel request with invalid ids skipped", **_where(msg))
            return
        pause = 0.05
        while True:  # a Redis outage delays the cancel; it is not dropped
            try:
                await self.handle(cancel)
                return
            except Exception as exc:  # noqa: BLE001 - retried: Redis or broker trouble
                log.warning(
                    "cancel request not handled yet", **_where(msg), error=type(exc).__name__
                )
                await asyncio.sleep(random.uniform(pause / 2, pause))
                pause = min(pause * 2, 2.0)

    async def handle(self, cancel: CancelRequest) -> CancelDecision:
        """Decide ``cancel`` (state/cancels.py) and act on the decision on this worker."""
        decision = await self._store.decide(
            tenant_id=cancel.tenant_id,
            request_id=cancel.request_id,
            cancel_id=cancel.cancel_id,
            session_id=cancel.session_id,
            response_id=response_id_for(cancel.request_id),
        )
        self.handled += 1
        if decision.decided_here:
            metrics.CANCEL_REQUESTS.labels(decision.finding.value).inc()
            log.info(
                "cancel request decided",
                request_id=log_safe_id(cancel.request_id),
                cancel_id=log_safe_id(cancel.cancel_id),
                finding=decision.finding.value,
            )
        if decision.finding is CancelFinding.PENDING:
            self._stop(cancel, decision)
        elif decision.decided_here:
            await self._publish([self._noop_event(cancel, decision)])
        return decision

    def _stop(self, cancel: CancelRequest, decision: CancelDecision) -> None:
        notice = CancelNotice(
            request_id=cancel.request_id,
            cancel_id=cancel.cancel_id,
            requested_by=cancel.requested_by,
            reason=cancel.reason,
            session_id=decision.session_id,
        )
        stopped = self._deps.cancellations.cancel(notice)
        woken = 0
        if self._forwarder is not None and decision.session_id is not None:
            woken = self._forwarder.wake(decision.session_id.encode())
        if stopped or woken:
            log.info(
                "cancelled work stopped",
                request_id=log_safe_id(cancel.request_id),
                running=stopped,
                retry_held=woken,
            )

    def _noop_event(self, cancel: CancelRequest, decision: CancelDecision) -> Outbound:
        code, text = _NOOP[decision.finding]
        failure = Failure(
            code=code,
            message=f"cancel {cancel.cancel_id}: {text}",
            stage=STAGE,
            retriable=decision.finding is CancelFinding.UNKNOWN,
        )
        return error_event(
            self._deps,
            request_id=cancel.request_id,
            failure=failure,
            session_id=decision.session_id,
            tenant_id=cancel.tenant_id,
        )


def _where(msg: Any) -> dict[str, object]:
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
