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
in place, then goes to a retry tier when it is transient (Redis or broker trouble) or to the
dead-letter topic (the failure policy, streams/policy.py, decides), so a poison record never stalls
its partition. Publishing itself is retried until it succeeds or the runner stops: if the broker is
unreachable no later offset can complete anyway, and an unacked offset is redelivered.

After publishing, the handler's ``then`` step (the session release) is tried again, with
jittered backoff, until it succeeds: a session must not stay claimed by a request whose answer is
out. If the runner stops first the event is left unacked, and its redelivery runs the step again
(the steps are idempotent).

Outages: with an :class:`~agentstream.resilience.outage.OutageGate` (Redis), an error that means
Redis is unreachable closes the gate. While it is closed the runner takes no new events
(``submit`` waits), and a failed event waits for Redis (up to ``outage_wait_s``) before its next
attempt instead of using its attempts up in a second, so a Redis blip costs latency, not dead
letters. Attempts used up while Redis is still down take the retry tiers (a transient error).

Size: with ``max_record_bytes`` set, every output record is measured before it is sent. An output
larger than the broker accepts is replaced by the stage's ``too_large`` outcome (an ERROR response
``OUTPUT_TOO_LARGE``), else by a dead letter; a dead letter that is itself too large goes without
its payload (schemas/dead_letter.py). A record the broker refuses for good (streams/refused.py:
too large, invalid, against policy) is never retried: its event's failure outcome is published
instead, and if even that is refused the event is dropped with one error line, so the offset
always moves on.

Local hand-over: a runner told to :meth:`~StageRunner.hand_over` a topic to the runner of the stage
that consumes it in this worker does not publish an event's output when that output is one record
for that topic and nothing waits on it (no ``then``, no final answer): it submits the record to
that runner as an event of its own (``Inbound.via`` names the topic it came from; it keeps the
consumed record's partition and offset). The consumed record's offset is acked only when the
handed-over event is done, so a crash in between redelivers the consumed record and its stage runs
again (stages are idempotent on redelivery). The receiving runner treats the event as if consumed
from the topic: same key order per session, same retries, retry tiers and dead letters (on its own
topic). It counts the event under the partition it came from, so a revoke of that partition gives
it the same grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from prometheus_client import Counter as Series

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError
from agentstream.observability import metrics
from agentstream.observability.logging import get_logger
from agentstream.observability.tracing import consume_span, propagated_headers
from agentstream.processors.base import Handler, Inbound, Outbound, StageDeps, StageResult
from agentstream.processors.signals import DeadLetter, RetryLater
from agentstream.resilience.outage import OutageGate
from agentstream.schemas.dead_letter import is_dead_letter, prior_attempts, within_limit
from agentstream.streams.acks import PartitionAcks
from agentstream.streams.message_size import SETTING, OutputTooLargeError, record_size
from agentstream.streams.policy import Action, Decision, FailurePolicy, transient
from agentstream.streams.refused import PublishRefusedError, refused

log = get_logger(__name__)
_STEP_ATTEMPTS = 5  # a post-publish step failing with a non-transient error, at most

AckFn = Callable[[], object]
DeadLetterFactory = Callable[[Inbound, str, BaseException, int], StageResult]
RetryRouter = Callable[[Inbound, str], Outbound | None]
ErrorEventFactory = Callable[[Inbound, str, BaseException, int], list[Outbound]]
# The terminal outcome of an event whose output cannot be delivered (None: dead-letter it).
TooLargeFactory = Callable[[Inbound, AgentStreamError], StageResult | None]


@dataclass(kw_only=True)
class RunnerStats:
    processed: int = 0
    dead_lettered: int = 0
    retries: int = 0
    publish_retries: int = 0
    retried_later: int = 0
    peak_in_flight: int = 0
    too_large: int = 0
    refused: int = 0
    post_publish_retries: int = 0
    outage_waits: int = 0
    handed_over: int = 0


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
        policy: FailurePolicy | None = None,
        max_record_bytes: int | None = None,
        too_large: TooLargeFactory | None = None,
        gate: OutageGate | None = None,
        outage_wait_s: float = 60.0,
    ) -> None:
        self.stage = stage
        self._handler = handler
        self._publish = publish
        self._dead_letter = dead_letter
        self._retry = retry
        self._error_event = error_event or (lambda *_: [])
        self._slots = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._policy = policy or FailurePolicy(retry_tiers=retry is not None)
        self._max_record_bytes = max_record_bytes
        self._too_large = too_large
        self._gate = gate
        self._outage_wait_s = outage_wait_s
        self._chains: dict[tuple[str, bytes], _Chain] = {}
        self._partitions: dict[tuple[str, int], PartitionAcks] = {}
        self._handoff: dict[str, StageRunner] = {}
        # events handed over by another runner, per partition they came from (not acked here:
        # the handing runner orders the acks of its partition)
        self._handed: Counter[tuple[str, int]] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._progress = asyncio.Event()
        self._closing = False
        self.stats = RunnerStats()
        self._gauge = metrics.IN_FLIGHT.labels(stage)
        # the per-event series, looked up once (a labels() call per event is a dict lookup
        # under a lock)
        self._handler_seconds = metrics.HANDLER_SECONDS.labels(stage)
        self._processed = metrics.EVENTS.labels(stage, "processed")
        self._finished: dict[tuple[str, str], Series] = {}

    def _requests(self, state: str, code: str) -> Series:
        """The finished-requests series of (state, code), looked up once per pair."""
        series = self._finished.get((state, code))
        if series is None:
            series = self._finished[(state, code)] = metrics.REQUESTS.labels(state, code)
        return series

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def hand_over(self, topic: str, target: StageRunner) -> None:
        """Give outputs for ``topic`` to ``target`` (a runner of this worker) instead of
        publishing them (local hand-over, see the module docstring)."""
        self._handoff[topic] = target

    @property
    def accepting(self) -> bool:
        """False once :meth:`drain` began: new events would wait for ever."""
        return not self._closing

    async def submit(self, msg: Inbound, ack: AckFn) -> None:
        """Hand over one consumed event; waits while the runner is full.

        After :meth:`drain` began, intake is closed: the call waits until it is cancelled (the
        event stays unacked and is redelivered to the next owner)."""
        if self._closing:
            await asyncio.Event().wait()
        if self._gate is not None and not self._gate.up:
            await self._gate.wait_up()  # Redis is down: take nothing new until it answers
        await self._slots.acquire()
        self._in_flight += 1
        self.stats.peak_in_flight = max(self.stats.peak_in_flight, self._in_flight)
        self._gauge.inc()
        self._idle.clear()
        source = msg.via or msg.topic
        tp = (source, msg.partition)
        if msg.via is None:
            acks = self._partitions.get(tp)
            if acks is None:
                acks = self._partitions[tp] = PartitionAcks()
            acks.track(msg.offset, ack)
        else:
            self._handed[tp] += 1
        key = (source, msg.key if msg.key is not None else b"\x00p%d" % msg.partition)
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
                local = await self._process(item.msg)
                chain.items.popleft()
                if item.msg.via is not None:
                    self._handed[chain.partition] -= 1
                done = self._completion(item, chain.partition)
                try:
                    if local is None:
                        done()
                    else:  # cancelled while the target is full: left unacked
                        await self._give(local, done)
                finally:
                    self._release_slot()
        except Exception as exc:  # noqa: BLE001 - only a publish failing while the runner stops
            # the event stays unacked: the partition's next owner gets it again
            log.warning("stopped with unfinished work", stage=self.stage, error=type(exc).__name__)
        finally:
            if self._chains.get(key) is chain:
                del self._chains[key]
            for item in chain.items:  # abandoned (revoked or cancelled): never acked
                if item.msg.via is not None:
                    self._handed[chain.partition] -= 1
                self._release_slot()
            chain.items.clear()

    def _completion(self, item: _Item, tp: tuple[str, int]) -> AckFn:
        """What marks ``item`` done: its offset in order (a consumed event), or the handing
        runner's ack (a handed-over one). After a revoke of its partition it does nothing."""
        if item.msg.via is not None:
            return item.ack
        acks = self._partitions.get(tp)

        def done() -> None:
            if acks is not None and self._partitions.get(tp) is acks:
                acks.complete(item.msg.offset)
                self._progress.set()

        return done

    async def _give(self, local: tuple[StageRunner, Inbound], done: AckFn) -> None:
        """Submit the event's output to the runner of its topic in this worker; ``done`` runs
        when that event is done. A receiving runner that is stopping takes nothing: the event
        stays unacked and is redelivered, as after a crash."""
        target, event = local
        if not target.accepting:
            return
        self.stats.handed_over += 1
        await target.submit(event, done)

    def _release_slot(self) -> None:
        self._gauge.dec()
        self._progress.set()
        self._in_flight -= 1
        self._slots.release()
        if self._in_flight == 0:
            self._idle.set()

    async def _process(self, msg: Inbound) -> tuple[StageRunner, Inbound] | None:
        """Handle ``msg`` and publish its output; or, when its output is one record for a stage
        of this worker (local hand-over), return that stage's runner and the event to give it."""
        with (
            consume_span(self.stage, msg.topic, msg.partition, msg.offset, msg.headers),
            self._handler_seconds.time(),
        ):
            result = await self._handle(msg)
            context = propagated_headers(msg.headers)
        if context:  # continue the trace in the next stage
            names = {k for k, _ in context}
            result.records = [
                replace(r, headers=[*(h for h in r.headers if h[0] not in names), *context])
                for r in result.records
            ]
        result = self._within_limit(msg, result)
        local = self._local(msg, result)
        if local is not None:
            self.stats.processed += 1
            self._processed.inc()
            return local
        result = await self._deliver(msg, result)
        if result.finished is not None:  # counted once its records are out
            finished = result.finished
            self._requests(finished.state, finished.error_code or "").inc()
        if result.then is not None:
            await self._after_publish(msg, result.then)
        self.stats.processed += 1
        self._processed.inc()
        return None

    def _local(self, msg: Inbound, result: StageResult) -> tuple[StageRunner, Inbound] | None:
        """The runner and event for a local hand-over of ``result``: one record whose topic a
        runner of this worker consumes, nothing to run after it, not a request's end."""
        if len(result.records) != 1 or result.then is not None or result.finished is not None:
            return None
        record = result.records[0]
        target = self._handoff.get(record.topic)
        if target is None:
            return None
        event = Inbound(
            topic=record.topic,
            partition=msg.partition,
            offset=msg.offset,
            timestamp_ms=msg.timestamp_ms,
            key=record.key,
            value=record.value,
            headers=record.headers,
            via=msg.via or msg.topic,
            carried=record.carried,
        )
        return target, event

    async def _after_publish(self, msg: Inbound, then: Callable[[], Awaitable[None]]) -> None:
        """Run the post-publish step until it succeeds. A transient failure is retried (after
        Redis answers again, when it was an outage); while the runner stops the error is raised,
        so the event stays unacked and its redelivery runs the step again. Any other error is
        tried :data:`_STEP_ATTEMPTS` times (a client in a bad state mid-failover raises odd
        errors), then logged with its traceback: retrying would not help."""
        pause = 0.05
        odd = 0
        while True:
            try:
                await then()
                return
            except Exception as exc:
                if not transient(exc):
                    odd += 1
                    if odd >= _STEP_ATTEMPTS:
                        log.exception("post-publish step failed", **_where(msg))
                        return
                if self._closing:
                    raise
                self.stats.post_publish_retries += 1
                metrics.POST_PUBLISH_RETRIES.labels(self.stage).inc()
                log.warning(
                    "post-publish step failed, retrying", **_where(msg), error=type(exc).__name__
                )
                if not await self._wait_for_outage(exc):
                    await asyncio.sleep(random.uniform(pause / 2, pause))
                    pause = min(pause * 2, 2.0)

    async def _wait_for_outage(self, exc: BaseException) -> bool:
        """When ``exc`` means Redis is down: wait for it (bounded) and return True."""
        if self._gate is None or not self._gate.report(exc):
            return False
        self.stats.outage_waits += 1
        await self._gate.wait_up(self._outage_wait_s)
        return True

    async def _handle(self, msg: Inbound) -> StageResult:
        """Run the handler; the failure policy turns its signals and failures into a retry in
        place, or the records that end the event (retry tier, dead letter)."""
        prior = prior_attempts(msg)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._handler(msg)
            except Exception as exc:
                decision = self._policy.decide(exc, attempt)
                if decision.action is Action.RETRY_IN_PLACE:
                    self.stats.retries += 1
                    log.warning(
                        "stage error, retrying",
                        **_where(msg),
                        error=type(exc).__name__,
                        attempt=attempt,
                    )
                    if not await self._wait_for_outage(exc):
                        await asyncio.sleep(decision.delay_s)
                    continue
                signal = isinstance(exc, DeadLetter | RetryLater)
                if not signal:
                    log.exception(
                        "stage error",
                        **_where(msg),
                        code=decision.code,
                    )
                return self._fail(msg, decision, exc, prior + (1 if signal else attempt))

    def _fail(
        self, msg: Inbound, decision: Decision, exc: BaseException, attempt: int
    ) -> StageResult:
        code = decision.code
        if decision.action is Action.RETRY_LATER and self._retry is not None:
            scheduled = self._retry(msg, code)
            if scheduled is not None:
                self.stats.retried_later += 1
                metrics.EVENTS.labels(self.stage, "retry_scheduled").inc()
                log.warning(
                    "sent to retry topic",
                    **_where(msg),
                    code=code,
                    retry_topic=scheduled.topic,
                    attempt=attempt,
                )
                return StageResult(records=[scheduled, *self._error_event(msg, code, exc, attempt)])
        self.stats.dead_lettered += 1
        metrics.EVENTS.labels(self.stage, "dead_lettered").inc()
        log.warning(
            "dead-lettered",
            **_where(msg),
            code=code,
            attempt=attempt,
        )
        return self._dead_letter(msg, code, exc, attempt)

    def _within_limit(self, msg: Inbound, result: StageResult) -> StageResult:
        """``result`` when every record fits the broker's limit; else the event's failure
        outcome (for a too-large output) and dead letters shrunk to fit."""
        limit = self._max_record_bytes
        if limit is None:
            return result
        shrink = False
        for record in result.records:
            size = record_size(record)
            if size <= limit:
                continue
            if is_dead_letter(record):
                shrink = True
            else:
                log.warning(
                    "output too large for the broker",
                    **_where(msg),
                    output_topic=record.topic,
                    size=size,
                    limit=limit,
                    setting=f"the topic's max.message.bytes (or {SETTING})",
                )
                replacement = self._replacement(msg, OutputTooLargeError(record.topic, size, limit))
                return self._fit(msg, replacement, limit)
        return self._fit(msg, result, limit) if shrink else result

    def _replacement(self, msg: Inbound, exc: AgentStreamError) -> StageResult:
        """What ends an event whose output can never be delivered: the stage's ``too_large``
        outcome for a too-large output, else (or when that does not fit either) a dead letter."""
        if exc.code == OutputTooLargeError.code:
            self.stats.too_large += 1
            metrics.EVENTS.labels(self.stage, "output_too_large").inc()
            outcome = self._too_large(msg, exc) if self._too_large is not None else None
            limit = self._max_record_bytes
            if outcome is not None and (
                limit is None
                or all(is_dead_letter(r) or record_size(r) <= limit for r in outcome.records)
            ):
                return outcome
        decision = Decision(action=Action.DEAD_LETTER, code=exc.code, retriable=False)
        return self._fail(msg, decision, exc, prior_attempts(msg) + 1)

    def _fit(self, msg: Inbound, result: StageResult, limit: int | None) -> StageResult:
        """Dead letters over ``limit`` shrunk to fit; a record that still does not fit (only a
        dead letter whose own headers are too large) is dropped with an error line."""
        if limit is None:
            return result
        records = []
        for record in result.records:
            if is_dead_letter(record):
                record = within_limit(record, limit, record_size)
            if record_size(record) > limit:
                log.error(
                    "record too large even without its payload; dropped",
                    **_where(msg),
                    output_topic=record.topic,
                    limit=limit,
                )
                continue
            records.append(record)
        return replace(result, records=records)

    async def _deliver(self, msg: Inbound, result: StageResult) -> StageResult:
        """Publish ``result``; when the broker refuses one of its records for good, publish the
        event's failure outcome instead, then that outcome with dead letters stripped to their
        headers; if even that is refused, give up on the records (one error line) so the
        partition moves on. Returns what was published (its ``then`` still runs)."""
        for step in ("output", "replacement", "stripped"):
            try:
                await self._publish_with_retry(msg, result.records)
                return result
            except PublishRefusedError as exc:
                self.stats.refused += 1
                metrics.EVENTS.labels(self.stage, "publish_refused").inc()
                hint = {"setting": f"the topic's max.message.bytes (or {SETTING})"}
                log.warning(
                    "broker refused an output record; not retrying",
                    **_where(msg),
                    code=exc.code,
                    error=type(exc.error).__name__,
                    step=step,
                    **(hint if exc.code == OutputTooLargeError.code else {}),
                )
                if step == "output" and not any(is_dead_letter(r) for r in result.records):
                    replacement = self._replacement(msg, exc)
                    result = self._fit(msg, replacement, self._max_record_bytes)
                else:
                    stripped = [
                        within_limit(r, 0, record_size) if is_dead_letter(r) else r
                        for r in result.records
                    ]
                    result = replace(result, records=stripped)
        log.error(
            "broker refused every outcome of this event; dropped",
            **_where(msg),
        )
        return StageResult(then=result.then)

    async def _publish_with_retry(self, msg: Inbound, records: list[Outbound]) -> None:
        delay = 0.05
        while True:
            try:
                await self._publish(records)
                return
            except Exception as exc:
                if refused(exc):
                    raise PublishRefusedError(exc) from exc
                if self._closing:
                    raise
                self.stats.publish_retries += 1
                log.warning(
                    "publish failed, retrying",
                    **_where(msg),
                    error=type(exc).__name__,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def drain(self, timeout_s: float) -> bool:
        """Stop retrying, wait up to ``timeout_s`` for in-flight work; True if all finished."""
        self._closing = True
        if self._idle.is_set():  # on 3.11, wait_for(..., timeout=0) times out even when set
            return True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
            return True
        except TimeoutError:
            return False

    def pending(self, partition: tuple[str, int]) -> int:
        """Events of ``partition`` not done yet (handed-over ones included)."""
        acks = self._partitions.get(partition)
        return (len(acks) if acks is not None else 0) + self._handed[partition]

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


def _where(msg: Inbound) -> dict[str, object]:
    """The log fields that place an event: topic, partition, offset (never its payload)."""
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}


def hand_over_first_turns(
    settings: Settings,
    validation: StageRunner | None,
    generation: StageRunner | None,
    deps: StageDeps,
) -> None:
    """With ``kafka.local_handoff`` and both stages in this process, validation hands a
    request's first turn to the generation runner (and reads what it needs with its claim)."""
    if settings.kafka.local_handoff and validation is not None and generation is not None:
        validation.hand_over(settings.topics.generation, generation)
        deps.first_turn_here = True
