"""Dead-letter topics: summarise, read decoded, and replay to the original (or another) topic.

Reading takes a snapshot of each partition's end first: the fetch high-water mark
(``consumer.highwater(tp)``), because ``end_offsets()`` is wrong on Tansu (it answers the last
batch's base offset + 1). Records that arrive while a scan runs are not part of it.

A replayed record keeps its key and value bytes. Its headers are the original ones without the
dead-letter convention's own headers (``kafka_dlt-*`` and ``agentstream-error-code``/``-stage``/
``-attempt``/``-dlt-time``: a stale attempt count would make the retry path give up at once),
plus ``agentstream-replayed-from: <dlq topic>/<partition>/<offset>`` and
``agentstream-replay-id: <id>``.

Replays are at-least-once and may be repeated: the pipeline drops a request it has already
answered (request_id dedupe) and never repeats a completed LLM call or tool effect (step journal),
so replaying the same range twice answers each request once.

Two kinds of records are held back:

- records that can only fail again (:data:`NOT_REPLAYABLE`, e.g. ``UNDECODABLE`` bytes) are
  refused, with the reason, unless ``force``; a replayed record that fails again with the code it
  was dead-lettered with (header ``agentstream-replayed-code``) gets an ErrorEvent and no second
  dead letter, so a replay never grows the DLQ with copies of the same failure;
- ``TOOL_OUTCOME_UNKNOWN`` records re-run side-effecting tool calls whose effect may already have
  happened: they are sent only with ``rerun_side_effects``. Either way the summary lists each
  call: the tool, whether it is read-only or takes an idempotency key, and its journal status
  (``running``: started and never finished; none: the entry expired), so the operator can check
  the tool's side of it first.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError, ErrorCode
from agentstream.processors.base import Outbound
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.exceptions import SerializationError
from agentstream.streams.admin import list_topics
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.partitions import all_partitions
from agentstream.streams.publisher import Publisher
from agentstream.streams.topology import contract_for_topic

REPLAY_ID = "agentstream-replay-id"
#: Error codes whose records fail the same way when replayed, with the reason shown.
NOT_REPLAYABLE: dict[str, str] = {
    ErrorCode.UNDECODABLE: "its bytes decode with no known schema; a replay fails the same way",
}
SIDE_EFFECTS = ErrorCode.TOOL_OUTCOME_UNKNOWN
_LISTED = 1000  # side-effect records listed in a summary
StepStatus = Callable[[str, str, str], Awaitable[str | None]]
"""``step_status(tenant_id, session_id, step_id)``: a journal entry's status, None if absent."""
_STRIPPED = frozenset(dl.DLQ_HEADERS)
_BATCH = 500
_POLL_MS = 200


class ReplayError(AgentStreamError):
    code = ErrorCode.REPLAY_ERROR


@dataclass(frozen=True, kw_only=True)
class DeadLetterRecord:
    """One dead-letter record and what its headers say."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    meta: dict[str, str]

    @property
    def position(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def origin_topic(self) -> str | None:
        return self.meta.get(dl.ORIGINAL_TOPIC) or None

    @property
    def error_code(self) -> str:
        return self.meta.get(dl.ERROR_CODE) or "UNKNOWN"

    @property
    def error_class(self) -> str:
        return self.meta.get(dl.EXCEPTION_FQCN) or "unknown"

    @property
    def dead_lettered_ms(self) -> int:
        """When it was dead-lettered: the ``agentstream-dlt-time`` header, else the timestamp."""
        raw = self.meta.get(dl.DLT_TIME)
        try:
            return int(raw) if raw else self.timestamp_ms
        except ValueError:
            return self.timestamp_ms

    @property
    def session(self) -> str | None:
        return self.key.decode(errors="replace") if self.key is not None else None

    def replay_headers(self, replay_id: str) -> list[tuple[str, bytes]]:
        kept = [
            (k, v)
            for k, v in self.headers
            if k not in _STRIPPED
            and not k.startswith("kafka_dlt-")
            and k not in (dl.REPLAYED_FROM, REPLAY_ID, dl.REPLAYED_CODE, dl.UNKNOWN_CALLS)
        ]
        return [
            *kept,
            (dl.REPLAYED_FROM, self.position.encode()),
            (REPLAY_ID, replay_id.encode()),
            (dl.REPLAYED_CODE, self.error_code.encode()),
        ]

    def unknown_calls(self) -> list[dict[str, Any]]:
        """The calls a ``TOOL_OUTCOME_UNKNOWN`` record names (header ``UNKNOWN_CALLS``)."""
        try:
            calls = json.loads(self.meta.get(dl.UNKNOWN_CALLS) or "[]")
        except ValueError:
            return []
        return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


@dataclass(frozen=True, kw_only=True)
class UnknownCall:
    """A tool call of a ``TOOL_OUTCOME_UNKNOWN`` dead letter, as an operator must judge it."""

    tool: str
    step: str
    read_only: bool
    accepts_idempotency_key: bool
    journal: str
    """The step's journal status now: ``running`` (started, never finished), ``done``,
    ``unknown`` (marked when dead-lettered), ``none`` (no entry: expired, so a replay runs every
    step again) or ``not checked`` (no Redis)."""


@dataclass(frozen=True, kw_only=True)
class SideEffectRecord:
    position: str
    session: str | None
    calls: list[UnknownCall]


@dataclass(frozen=True, kw_only=True)
class ReplayFilter:
    """Which records to take; empty sets match everything. Times are epoch milliseconds."""

    error_codes: frozenset[str] = frozenset()
    error_classes: frozenset[str] = frozenset()
    """Fully qualified (``agentstream.llm.exceptions.LLMServerError``) or bare class names."""
    since_ms: int | None = None
    until_ms: int | None = None
    sessions: frozenset[str] = frozenset()
    tenants: frozenset[str] = frozenset()

    @property
    def needs_tenant(self) -> bool:
        return bool(self.tenants)

    def matches(self, record: DeadLetterRecord, tenant: str | None = None) -> bool:
        if self.error_codes and record.error_code not in self.error_codes:
            return False
        if self.error_classes and not any(
            record.error_class == c or record.error_class.endswith(f".{c}")
            for c in self.error_classes
        ):
            return False
        when = record.dead_lettered_ms
        if self.since_ms is not None and when < self.since_ms:
            return False
        if self.until_ms is not None and when >= self.until_ms:
            return False
        if self.sessions and record.session not in self.sessions:
            return False
        return not self.tenants or tenant in self.tenants


@dataclass(kw_only=True)
class DlqSummary:
    topic: str
    records: int
    partitions: int
    by_code: Counter[str] = field(default_factory=Counter)
    by_class: Counter[str] = field(default_factory=Counter)
    by_origin: Counter[str] = field(default_factory=Counter)


@dataclass(kw_only=True)
class ReplaySummary:
    topic: str
    replay_id: str
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    no_target: int = 0
    no_payload: int = 0
    """Dead letters whose payload was omitted (too large for the broker): nothing to replay."""
    refused: Counter[str] = field(default_factory=Counter)
    """Records held back because they can only fail again (by code; see NOT_REPLAYABLE)."""
    held_side_effects: int = 0
    """``TOOL_OUTCOME_UNKNOWN`` records not sent (no ``rerun_side_effects``)."""
    side_effects: list[SideEffectRecord] = field(default_factory=list)
    """The ``TOOL_OUTCOME_UNKNOWN`` records matched (sent or held), with their calls."""
    by_target: Counter[str] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0

    @property
    def filtered_out(self) -> int:
        return self.scanned - self.matched


Progress = Callable[[int, int], None]
"""``progress(done, total)``; called after every record and once when the total is known."""


def schema_for_topic(settings: Settings, topic: str) -> str | None:
    """The Avro record name carried by ``topic`` (or by the topic a DLQ belongs to)."""
    contract = contract_for_topic(settings, topic)
    return contract.schema if contract is not None else None


async def decode(
    settings: Settings, codec: AvroCodec, record: DeadLetterRecord
) -> tuple[dict[str, Any] | None, str | None]:
    """``(value, None)`` decoded with the origin topic's schema, or ``(None, why not)``."""
    schema = schema_for_topic(settings, record.origin_topic or record.topic)
    if schema is None:
        return None, "no schema known for the origin topic"
    try:
        return await codec.decode_async(schema, record.value), None
    except SerializationError as exc:
        return None, getattr(exc, "reason", None) or str(exc)


async def dlq_topics(settings: Settings) -> list[str]:
    """Every topic on the cluster whose name ends with the dead-letter suffix."""
    suffix = settings.topics.dlq_suffix
    return sorted(t for t in await list_topics(settings) if t.endswith(suffix))


class DlqReader:
    """Reads a topic from its first offsets up to the high-water marks seen on the first fetch."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self.total: int | None = None
        self._consumer = AIOKafkaConsumer(
            **client_kwargs(settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
            request_timeout_ms=int(settings.timeouts.kafka_request_s * 1000),
        )

    async def __aenter__(self) -> DlqReader:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def records(
        self, on_total: Callable[[int], None] | None = None
    ) -> AsyncIterator[DeadLetterRecord]:
        """Every record from the beginning up to the high-water mark seen at the start."""
        consumer = self._consumer
        tps, begin = await self._assign()
        end: dict[TopicPartition, int] = {}
        done: set[TopicPartition] = set()
        wait_s = self.settings.timeouts.kafka_request_s
        deadline = time.monotonic() + wait_s
        while len(done) < len(tps):
            batches = await consumer.getmany(timeout_ms=_POLL_MS)
            self._learn_ends(tps, begin, end, on_total)
            if len(end) < len(tps) and time.monotonic() > deadline:
                raise ReplayError(f"no high-water mark for {self.topic} after {wait_s:g}s")
            for tp, batch in sorted(batches.items(), key=lambda item: item[0].partition):
                for r in batch:
                    if tp in end and r.offset >= end[tp]:
                        break
                    yield _record(r)
            for tp in tps:
                if tp in end and tp not in done and await consumer.position(tp) >= end[tp]:
                    done.add(tp)
                    consumer.pause(tp)

    async def _assign(self) -> tuple[list[TopicPartition], dict[TopicPartition, int]]:
        """Every partition of the topic, assigned and at its beginning."""
        consumer = self._consumer
        tps = await all_partitions(consumer, self.topic)
        if not tps:
            raise ReplayError(f"topic {self.topic!r} does not exist")
        consumer.assign(tps)
        begin: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, begin[tp])
        return tps, begin

    def _learn_ends(
        self,
        tps: list[TopicPartition],
        begin: dict[TopicPartition, int],
        end: dict[TopicPartition, int],
        on_total: Callable[[int], None] | None,
    ) -> None:
        """Each partition's end: its fetch high-water mark (right on Tansu too, unlike
        end_offsets), known after its first fetch; the total once all are known."""
        for tp in tps:
            if tp not in end:
                highwater = self._consumer.highwater(tp)
                if highwater is not None:
                    end[tp] = highwater
        if self.total is None and len(end) == len(tps):
            self.total = sum(max(0, end[tp] - begin[tp]) for tp in tps)
            if on_total is not None:
                on_total(self.total)


def _record(r: Any) -> DeadLetterRecord:
    return DeadLetterRecord(
        topic=r.topic,
        partition=r.partition,
        offset=r.offset,
        timestamp_ms=int(r.timestamp or 0),
        key=r.key,
        value=r.value if r.value is not None else b"",
        headers=[(k, v if v is not None else b"") for k, v in r.headers or ()],
        meta=dl.header_map([(k, v or b"") for k, v in r.headers or ()]),
    )


async def summarize(settings: Settings, topics: Iterable[str] | None = None) -> list[DlqSummary]:
    """Count every dead-letter topic (default: all on the cluster) with an error breakdown."""
    names = list(topics) if topics is not None else await dlq_topics(settings)
    partitions = await list_topics(settings)
    out: list[DlqSummary] = []
    for name in names:
        if name not in partitions:
            raise ReplayError(f"topic {name!r} does not exist")
        summary = DlqSummary(topic=name, records=0, partitions=partitions[name])
        async with DlqReader(settings, name) as reader:
            async for record in reader.records():
                summary.records += 1
                summary.by_code[record.error_code] += 1
                summary.by_class[record.error_class.rsplit(".", 1)[-1]] += 1
                summary.by_origin[record.origin_topic or "?"] += 1
        out.append(summary)
    return out


async def matching(
    settings: Settings,
    topic: str,
    codec: AvroCodec,
    filter_: ReplayFilter,
    *,
    decode_values: bool = True,
    on_total: Callable[[int], None] | None = None,
    on_scanned: Callable[[DeadLetterRecord, bool], None] | None = None,
) -> AsyncIterator[tuple[DeadLetterRecord, dict[str, Any] | None, str | None]]:
    """The records of ``topic`` that pass ``filter_``, each with its decoded value (or why not;
    both ``None`` when ``decode_values`` is off and the filter does not need the tenant)."""
    async with DlqReader(settings, topic) as reader:
        async for record in reader.records(on_total):
            value: dict[str, Any] | None = None
            why: str | None = None
            if decode_values or filter_.needs_tenant:
                value, why = await decode(settings, codec, record)
            tenant = value.get("tenant_id") if value else None
            ok = filter_.matches(record, tenant if isinstance(tenant, str) else None)
            if on_scanned is not None:
                on_scanned(record, ok)
            if ok:
                yield record, value, why


@dataclass(kw_only=True)
class _Tracker:
    """Counts scanned records and reports progress (done, total)."""

    summary: ReplaySummary
    progress: Progress | None
    total: int = 0

    def on_total(self, n: int) -> None:
        self.total = n
        if self.progress is not None:
            self.progress(0, n)

    def on_scanned(self, record: DeadLetterRecord, ok: bool) -> None:
        self.summary.scanned += 1
        if self.progress is not None:
            self.progress(self.summary.scanned, self.total)


@dataclass(kw_only=True)
class _Sender:
    """Publishes replayed records in batches, or one at a time at ``rate`` records/s."""

    publisher: Publisher
    summary: ReplaySummary
    rate: float | None
    pending: list[Outbound] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    async def add(self, record: Outbound) -> None:
        self.pending.append(record)
        if self.rate is not None:
            wait = self.started + self.summary.replayed / self.rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.rate is not None or len(self.pending) >= _BATCH:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            await self.publisher.publish(self.pending)
            self.summary.replayed += len(self.pending)
            self.pending = []


@dataclass(frozen=True, kw_only=True)
class _Hold:
    """What replay holds back, and how it looks the side effects up."""

    force: bool
    rerun_side_effects: bool
    step_status: StepStatus | None
    settings: Settings
    codec: AvroCodec

    async def allows(self, record: DeadLetterRecord, summary: ReplaySummary) -> bool:
        if dl.PAYLOAD_OMITTED in record.meta:
            return True  # nothing to send: counted as no_payload
        code = record.error_code
        if code in NOT_REPLAYABLE and not self.force:
            summary.refused[code] += 1
            return False
        if code != SIDE_EFFECTS:
            return True
        if len(summary.side_effects) < _LISTED:
            summary.side_effects.append(await self._describe(record))
        if not self.rerun_side_effects:
            summary.held_side_effects += 1
            return False
        return True

    async def _describe(self, record: DeadLetterRecord) -> SideEffectRecord:
        tenant: str | None = None
        if self.step_status is not None:
            value, _ = await decode(self.settings, self.codec, record)
            found = value.get("tenant_id") if value else None
            tenant = found if isinstance(found, str) else None
        calls = []
        for c in record.unknown_calls():
            journal = "not checked"
            if self.step_status is not None and tenant is not None and record.session:
                journal = await self.step_status(tenant, record.session, str(c.get("step"))) or (
                    "none"
                )
            calls.append(
                UnknownCall(
                    tool=str(c.get("tool", "?")),
                    step=str(c.get("step", "?")),
                    read_only=bool(c.get("read_only")),
                    accepts_idempotency_key=bool(c.get("accepts_idempotency_key")),
                    journal=journal,
                )
            )
        return SideEffectRecord(position=record.position, session=record.session, calls=calls)


def _replay_target(
    record: DeadLetterRecord, to: str | None, existing: Mapping[str, int], summary: ReplaySummary
) -> str | None:
    """Where ``record`` goes back to (counted in ``summary``), or None when it cannot be
    replayed (no origin header, payload omitted for size)."""
    target = to or record.origin_topic
    if target is None:
        summary.no_target += 1
        return None
    if dl.PAYLOAD_OMITTED in record.meta:
        summary.no_payload += 1
        return None
    if target not in existing:
        raise ReplayError(f"original topic {target!r} of {record.position} does not exist")
    summary.by_target[target] += 1
    return target


async def replay(
    settings: Settings,
    topic: str,
    codec: AvroCodec,
    *,
    to: str | None = None,
    filter_: ReplayFilter | None = None,
    dry_run: bool = False,
    rate: float | None = None,
    replay_id: str | None = None,
    progress: Progress | None = None,
    force: bool = False,
    rerun_side_effects: bool = False,
    step_status: StepStatus | None = None,
) -> ReplaySummary:
    """Re-publish the matching records of dead-letter ``topic`` (see the module docstring).

    The target is ``to`` or each record's ``kafka_dlt-original-topic`` header (records without
    one are counted as ``no_target``, records whose payload was omitted as ``no_payload``).
    ``rate`` caps records per second. ``dry_run`` sends nothing and reports what would be sent.
    ``force`` sends records that can only fail again; ``rerun_side_effects`` sends
    ``TOOL_OUTCOME_UNKNOWN`` records; ``step_status`` looks their journal entries up.
    """
    if rate is not None and rate <= 0:
        raise ReplayError("rate must be > 0 records/s")
    summary = ReplaySummary(
        topic=topic, replay_id=replay_id or uuid.uuid4().hex[:12], dry_run=dry_run
    )
    existing = await list_topics(settings)
    for name, what in ((topic, "topic"), (to, "target topic")):
        if name is not None and name not in existing:
            raise ReplayError(f"{what} {name!r} does not exist")
    tracker = _Tracker(summary=summary, progress=progress)
    hold = _Hold(
        force=force,
        rerun_side_effects=rerun_side_effects,
        step_status=step_status,
        settings=settings,
        codec=codec,
    )

    sender = None if dry_run else _Sender(publisher=Publisher(settings), summary=summary, rate=rate)
    if sender is not None:
        await sender.publisher.start()
    started = time.monotonic()
    try:
        async for record, _, _ in matching(
            settings,
            topic,
            codec,
            filter_ or ReplayFilter(),
            decode_values=False,
            on_total=tracker.on_total,
            on_scanned=tracker.on_scanned,
        ):
            summary.matched += 1
            summary.by_code[record.error_code] += 1
            if not await hold.allows(record, summary):
                continue
            target = _replay_target(record, to, existing, summary)
            if target is not None and sender is not None:
                await sender.add(
                    Outbound(
                        topic=target,
                        key=record.key,
                        value=record.value,
                        headers=record.replay_headers(summary.replay_id),
                    )
                )
        if sender is not None:
            await sender.flush()
    finally:
        if sender is not None:
            await sender.publisher.stop()
        summary.elapsed_s = time.monotonic() - started
    return summary
