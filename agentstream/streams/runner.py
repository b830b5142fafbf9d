"""Key-ordered concurrent stage runner.

Events with different keys (session ids) run concurrently; events with the same key run one at a
time in offset order. At most ``max_in_flight`` events are held (queued or running); ``submit``
blocks when full, which stops the consuming loop and lets the consumer's own buffer pause
fetching, so nothing is buffered without bound. Heartbeats continue in the background because the
consuming loop only waits on a semaphore.

For every event the runner calls the stage handler, publishes its records and waits for the
broker's acknowledgement, runs the handler's ``then`` step, and only then marks the offset done;
offsets are acked to the consumer strictly in order (``PartitionAcks``).

Failures: a handler's ``DeadLetter`` signal sends the original record to the stage's dead-letter
topic with headers and emits an ErrorEvent; ``RetryLater`` sends it to the next retry tier (see
streams/retry.py) or, past the last tier, to the dead-letter topic. An unexpected error is retried
in place (``max_attempts``, jittered exponential backoff), then goes to a retry tier when it is
transient (Redis or broker trouble) or to the dead-letter topic, so a poison record never stalls
its partition. Publishing itself is retried until it succeeds or the runner stops: if the broker is
unreachable no later offset can complete anyway, and an unacked offset is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from agentstream.exceptions import AgentStreamError
from agentstream.observability import metrics
from agentstream.observability.logging import get_logger
from agentstream.observability.tracing import consume_span, trace_headers
from agentstream.processors.base import Handler, Inbound, Outbound, StageResult
from agentstream.processors.signals import DeadLetter, RetryLater
from agentstream.schemas.dead_letter import prior_attempts
from agentstream.streams.acks import PartitionAcks

log = get_logger(__name__)

AckFn = Callable[[], object]
DeadLetterFactory = Callable[[Inbound, str, BaseException, int], StageResult]
RetryRouter = Callable[[Inbound, str], Outbound | None]
ErrorEventFactory = Callable[[Inbound, str, BaseException, int], list[Outbound]]


@dataclass(kw_only=True)
class RunnerStats:
    processed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    publish_retries: int = 0
    retried_later: int = 0
    peak_in_flight: int = 0


@dataclass(kw_only=True)
class _Item:
    msg: Inbound
    ack: AckFn


@dataclass(kw_only=True)
class _Chain:
    partition: tuple[str, int]
    items: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


class StageRunner:
    def __init__(
        self,
        *,
        stage: str,
        handler: Handler,
        publish: Callable[[list[Outbound]], Awaitable[None]],
        dead_letter: DeadLetterFactory,
        max_in_flight: int,
        retry: RetryRouter | None = None,
        error_event: ErrorEventFactory | None = None,
        max_attempts: int = 3,
        retry_base_s: float = 0.1,
    ) -> None:
        self.stage = stage
        self._handler = handler
        self._publish = publish
        self._dead_letter = dead_letter
        self._retry = retry
        self._error_event = error_event or (lambda *_: [])
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._max_attempts = max_attempts
        self._retry_base_s = retry_base_s
        self._chains: dict[tuple[str, bytes], _Chain] = {}
        self._partitions: dict[tuple[str, int], PartitionAcks] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._progress = asyncio.Event()
        self._closing = False
        self.stats = RunnerStats()
        self._gauge = metrics.IN_FLIGHT.labels(stage)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, msg: Inbound, ack: AckFn) -> None:
        """Hand over one consumed event; waits while the runner is full.

        After :meth:`drain` began, intake is closed: the call waits until it is cancelled (the
        event stays unacked and is redelivered to the next owner)."""
        if self._closing:
            await asyncio.Event().wait()
        await self._slots.acquire()
        self._in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._in_flight)
        self._gauge.inc()
        self._idle.clear()
        tp = (msg.topic, msg.partition)
        self._partitions.setdefault(tp, PartitionAcks()).track(msg.offset, ack)
        key = (msg.topic, msg.key if msg.key is not None else b"\x00p%d" % msg.partition)
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = _Chain(partition=tp)
            chain.items.append(_Item(msg=msg, ack=ack))
            task = asyncio.get_running_loop().create_task(self._run_chain(key, chain))
            chain.task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            chain.items.append(_Item(msg=msg, ack=ack))

    async def _run_chain(self, key: tuple[str, bytes], chain: _Chain) -> None:
        try:
            while chain.items:
                item = chain.items[0]
                await self._process(item.msg)
                chain.items.popleft()
                acks = self._partitions.get(chain.partition)
                if acks is not None:
                    acks.complete(item.msg.offset)
                self._release_slot()
        finally:
            if self._chains.get(key) is chain:
                del self._chains[key]
            for _ in chain.items:  # abandoned (revoked or cancelled): never acked
                self._release_slot()
            chain.items.clear()

    def _release_slot(self) -> None:
        self._gauge.dec()
        self._progress.set()
        self._in_flight -= 1
        self._slots.release()
        if self._in_flight == 0:
            self._idle.set()

    async def _process(self, msg: Inbound) -> None:
        with (
            consume_span(self.stage, msg.topic, msg.partition, msg.offset, msg.headers),
            metrics.HANDLER_SECONDS.labels(self.stage).time(),
        ):
            result = await self._handle(msg)
            context = trace_headers()
        if context:  # continue the trace in the next stage
            names = {k for k, _ in context}
            result.records = [
                replace(r, headers=[*(h for h in r.headers if h[0] not in names), *context])
                for r in result.records
            ]
        await self._publish_with_retry(msg, result.records)
        if result.then is not None:
            try:
                await result.then()
            except Exception as exc:  # noqa: BLE001 - outputs are out; do not redo the event
                log.warning(
                    "post-publish step failed",
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    error=type(exc).__name__,
                )
        self.stats.processed += 1
        metrics.EVENTS.labels(self.stage, "processed").inc()

    async def _handle(self, msg: Inbound) -> StageResult:
        """Run the handler; turn its signals and failures into the records that end the event."""
        prior = prior_attempts(msg)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._handler(msg)
            except DeadLetter as signal:
                return self._fail(msg, signal.code, signal, prior + 1, retry=False)
            except RetryLater as signal:
                return self._fail(msg, signal.code, signal, prior + 1, retry=True)
            except Exception as exc:
                code = exc.code if isinstance(exc, AgentStreamError) else "INTERNAL_ERROR"
                if attempt < self._max_attempts:
                    self.stats.retries += 1
                    delay = random.uniform(0, self._retry_base_s * 2 ** (attempt - 1))
                    log.warning(
                        "stage error, retrying",
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        error=type(exc).__name__,
                        attempt=attempt,
                    )
                    await asyncio.sleep(delay)
                    continue
                log.exception(
                    "stage error",
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    code=code,
                )
                return self._fail(msg, code, exc, prior + attempt, retry=_transient(exc))

    def _fail(
        self, msg: Inbound, code: str, exc: BaseException, attempt: int, *, retry: bool
    ) -> StageResult:
        if retry and self._retry is not None:
            scheduled = self._retry(msg, code)
            if scheduled is not None:
                self.stats.retried_later += 1
                metrics.EVENTS.labels(self.stage, "retry_scheduled").inc()
                log.warning(
                    "sent to retry topic",
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    code=code,
                    retry_topic=scheduled.topic,
                    attempt=attempt,
                )
                return StageResult(records=[scheduled, *self._error_event(msg, code, exc, attempt)])
        self.stats.dead_lettered += 1
        log.warning(
            "dead-lettered",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            code=code,
            attempt=attempt,
        )
        return self._dead_letter(msg, code, exc, attempt)

    async def _publish_with_retry(self, msg: Inbound, records: list[Outbound]) -> None:
        delay = 0.05
        while True:
            try:
                await self._publish(records)
                return
            except Exception as exc:
                if self._closing:
                    raise
                self.stats.publish_retries += 1
                log.warning(
                    "publish failed, retrying",
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    error=type(exc).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def drain(self, timeout_s: float) -> bool:
        """Stop retrying, wait up to ``timeout_s`` for in-flight work; True if all finished."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
            return True
        except TimeoutError:
            return False

    def pending(self, partition: tuple[str, int]) -> int:
        acks = self._partitions.get(partition)
        return len(acks) if acks is not None else 0

    async def revoke(self, partitions: set[tuple[str, int]], grace_s: float) -> int:
        """The partitions are leaving this worker: let their in-flight work finish for up to
        ``grace_s`` (its acks reach the consumer, which commits them), then abandon the rest:
        unfinished events are not acked and the partitions' next owner gets them again.
        Returns how many events were abandoned."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(self.pending(tp) for tp in partitions):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        abandoned = 0
        for chain in [c for c in self._chains.values() if c.partition in partitions]:
            abandoned += len(chain.items)
            if chain.task is not None:
                chain.task.cancel()
        for tp in partitions:
            self._partitions.pop(tp, None)
        if abandoned:
            log.warning("revoked with unfinished work", stage=self.stage, abandoned=abandoned)
        return abandoned

    async def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _transient(exc: BaseException) -> bool:
    """Worth another try later: the error says so, or it is a connection/timeout problem."""
    if isinstance(exc, AgentStreamError):
        return exc.retriable
    return isinstance(exc, ConnectionError | TimeoutError | OSError) or type(exc).__name__ in (
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
        # Redis Cluster / replica trouble during a failover
        "MaxConnectionsError",
        "ClusterDownError",
        "MasterDownError",
        "TryAgainError",
        "ReadOnlyError",
    )
