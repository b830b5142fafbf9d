"""The history checker: what came out for every request, checked against what went in.

:class:`Observer` reads ``agent.responses``, every stage's dead-letter topic and ``agent.errors``
from the beginning (its own consumer, no group), keeping every copy of every record.
:func:`check` then holds the run to these rules:

- every submitted request has exactly one terminal outcome: a response or a dead letter with a
  reason (``agentstream-error-code``); none is *lost*, two different response ids, or a response
  and a dead letter, are *duplicated*. The same response id read twice is a *copy* (a republish
  after a redelivery; clients drop it by response id) and is counted apart;
- response ids are distinct across requests;
- a session's responses come in the order of its requests (*order violations*: responses that
  came after the response to a later request of their session);
- a completed answer is arithmetically right (*wrong answers*);
- a session's history grows: a completed answer whose prompt is no larger than the previous
  completed answer's in the same session, without a ``CONTEXT_LOST`` in between, means the
  conversation was silently lost (*history resets*);
- *recovery time*: from the end of the fault until every request submitted before that moment
  has its terminal outcome (``None`` when some never get one);
- no session stays claimed by a request that already has its terminal outcome
  (:func:`claimed_after_answer`, read from Redis after the drain: such a session refuses its
  next requests until ``session_busy_timeout_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from agentstream.config import Settings
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.exceptions import SerializationError
from agentstream.state.context import ContextStore
from agentstream.state.keys import Keys
from agentstream.state.redis import redis_from_url
from agentstream.streams.kafka_config import client_kwargs
from agentstream.streams.topology import STAGES
from chaos.load import Submitted

CONTEXT_LOST = "CONTEXT_LOST"


@dataclass(frozen=True, kw_only=True)
class SeenResponse:
    request_id: str
    response_id: str
    session_id: str
    state: str
    error_code: str | None
    content: str
    prompt_tokens: int
    at: float
    """The record's timestamp (s since the epoch)."""
    position: tuple[int, int]
    """(partition, offset): a session's responses share a partition."""


@dataclass(frozen=True, kw_only=True)
class SeenDeadLetter:
    request_id: str | None
    topic: str
    code: str
    at: float
    stage: str = ""


@dataclass(kw_only=True)
class Observer:
    """Reads the outcome topics from the beginning into memory (use ``async with``)."""

    settings: Settings
    codec: AvroCodec = field(default_factory=AvroCodec)
    responses: list[SeenResponse] = field(default_factory=list)
    dead_letters: list[SeenDeadLetter] = field(default_factory=list)
    error_codes: Counter[str] = field(default_factory=Counter)
    undecodable: int = 0
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Observer:
        consumer = AIOKafkaConsumer(
            **client_kwargs(self.settings), enable_auto_commit=False, fetch_max_wait_ms=50
        )
        self._consumer = consumer
        await consumer.start()
        await consumer._client.force_metadata_update()
        tps = [
            TopicPartition(topic, p)
            for topic in self._topics()
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self._consumer.stop()

    def _topics(self) -> list[str]:
        t = self.settings.topics
        return [t.responses, t.errors, *(spec.dlq(self.settings) for spec in STAGES)]

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    self._take(tp.topic, record)

    def _take(self, topic: str, record: Any) -> None:
        t = self.settings.topics
        try:
            if topic == t.responses:
                self.responses.append(self._response(record))
            elif topic == t.errors:
                self.error_codes[str(self.codec.decode("ErrorEvent", record.value)["code"])] += 1
            else:
                self.dead_letters.append(self._dead_letter(record))
        except SerializationError:
            self.undecodable += 1

    def _response(self, record: Any) -> SeenResponse:
        value = self.codec.decode("AgentResponse", record.value)
        return SeenResponse(
            request_id=value["request_id"],
            response_id=value["response_id"],
            session_id=value["session_id"],
            state=value["state"],
            error_code=value["error_code"],
            content=value["content"],
            prompt_tokens=int(value["usage"]["prompt_tokens"]),
            at=record.timestamp / 1000,
            position=(record.partition, record.offset),
        )

    def _dead_letter(self, record: Any) -> SeenDeadLetter:
        headers = dl.header_map([(k, v or b"") for k, v in record.headers or ()])
        origin = headers.get(dl.ORIGINAL_TOPIC, "")
        request_id = None
        for spec in STAGES:
            if spec.topic(self.settings) == origin and record.value:
                with contextlib.suppress(SerializationError):
                    request_id = self.codec.decode(spec.contract.schema, record.value)["request_id"]
        return SeenDeadLetter(
            request_id=request_id,
            topic=origin,
            code=headers.get(dl.ERROR_CODE, ""),
            at=record.timestamp / 1000,
            stage=headers.get(dl.STAGE, ""),
        )


@dataclass(kw_only=True)
class Verdict:
    """One scenario's figures (see the module doc for what each counts)."""

    requests: int
    not_submitted: int = 0
    answered_once: int = 0
    lost: int = 0
    duplicated: int = 0
    copies: int = 0
    order_violations: int = 0
    dead_letters: int = 0
    dead_letter_codes: Counter[str] = field(default_factory=Counter)
    error_responses: Counter[str] = field(default_factory=Counter)
    wrong_answers: int = 0
    history_resets: int = 0
    recovery_s: float | None = None
    claimed_after_answer: int | None = None
    lost_ids: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    """``request_id: expected ... got ...`` of each wrong answer (the model never echoes input)."""

    @property
    def failed(self) -> bool:
        """Any broken rule: the run's exit code says so. Every request of the load is valid, so
        a dead letter is a failure too (a fault turned into a dead letter); an ``ERROR``
        response (``CONTEXT_LOST``: the user is told) is not."""
        return bool(
            self.lost
            or self.duplicated
            or self.order_violations
            or self.wrong_answers
            or self.history_resets
            or self.claimed_after_answer
            or self.dead_letters
        )


@dataclass(kw_only=True)
class _Outcomes:
    responses: dict[str, list[SeenResponse]] = field(default_factory=lambda: defaultdict(list))
    dead: dict[str, list[SeenDeadLetter]] = field(default_factory=lambda: defaultdict(list))


def terminal_times(
    responses: Iterable[SeenResponse], dead_letters: Iterable[SeenDeadLetter]
) -> dict[str, float]:
    """When each request first got a terminal outcome."""
    first: dict[str, float] = {}
    for r in responses:
        first[r.request_id] = min(r.at, first.get(r.request_id, r.at))
    for d in dead_letters:
        if d.request_id is not None:
            first[d.request_id] = min(d.at, first.get(d.request_id, d.at))
    return first


def check(
    submitted: dict[str, Submitted],
    responses: list[SeenResponse],
    dead_letters: list[SeenDeadLetter],
    fault_end: float | None,
) -> Verdict:
    """Hold the outcomes of a run to the rules of the module doc."""
    verdict = Verdict(requests=len(submitted))
    outcomes = _Outcomes()
    for r in responses:
        if r.request_id in submitted:
            outcomes.responses[r.request_id].append(r)
    for d in dead_letters:
        verdict.dead_letters += 1
        verdict.dead_letter_codes[f"{d.code or '(no reason)'} in {d.stage or '?'}"] += 1
        if d.request_id in submitted:
            outcomes.dead[d.request_id].append(d)
    _terminal(verdict, submitted, outcomes)
    verdict.order_violations = _order_violations(submitted, outcomes)
    verdict.history_resets = _history_resets(submitted, outcomes)
    verdict.recovery_s = _recovery(submitted, responses, dead_letters, fault_end)
    return verdict


def _terminal(verdict: Verdict, submitted: dict[str, Submitted], outcomes: _Outcomes) -> None:
    owner: dict[str, str] = {}
    for request_id, state in submitted.items():
        if state.sent_at is None:
            verdict.not_submitted += 1
            continue
        seen = outcomes.responses.get(request_id, [])
        ids = {r.response_id for r in seen}
        verdict.copies += len(seen) - len(ids)
        for response_id in ids:
            if owner.setdefault(response_id, request_id) != request_id:
                verdict.duplicated += 1  # one response id answering two requests
        terminal = len(ids) + len(outcomes.dead.get(request_id, []))
        if terminal == 0:
            verdict.lost += 1
            verdict.lost_ids.append(request_id)
        elif terminal > 1:
            verdict.duplicated += 1
        else:
            verdict.answered_once += 1
        for r in seen[:1]:
            if r.state != "COMPLETED":
                verdict.error_responses[r.error_code or r.state] += 1
            elif r.content != state.request.expected:
                verdict.wrong_answers += 1
                verdict.wrong.append(
                    f"{request_id}: expected {state.request.expected!r}, got {r.content[:120]!r}"
                )


def _by_session(
    submitted: dict[str, Submitted], outcomes: _Outcomes
) -> dict[str, list[tuple[int, SeenResponse]]]:
    """Each session's first copies of its responses, in the order they were published."""
    sessions: dict[str, list[tuple[int, SeenResponse]]] = defaultdict(list)
    for request_id, seen in outcomes.responses.items():
        first = min(seen, key=lambda r: r.position)
        sessions[first.session_id].append((submitted[request_id].request.index, first))
    for items in sessions.values():
        items.sort(key=lambda item: item[1].position)
    return sessions


def _order_violations(submitted: dict[str, Submitted], outcomes: _Outcomes) -> int:
    violations = 0
    for items in _by_session(submitted, outcomes).values():
        highest = -1
        for index, _ in items:
            if index < highest:
                violations += 1
            highest = max(highest, index)
    return violations


def _history_resets(submitted: dict[str, Submitted], outcomes: _Outcomes) -> int:
    resets = 0
    for items in _by_session(submitted, outcomes).values():
        previous: int | None = None
        for _, response in sorted(items, key=lambda item: item[0]):
            if response.error_code == CONTEXT_LOST:
                previous = None  # told: the history starts again
            elif response.state == "COMPLETED":
                if previous is not None and response.prompt_tokens <= previous:
                    resets += 1
                previous = response.prompt_tokens
    return resets


def _recovery(
    submitted: dict[str, Submitted],
    responses: list[SeenResponse],
    dead_letters: list[SeenDeadLetter],
    fault_end: float | None,
) -> float | None:
    if fault_end is None:
        return None
    done = terminal_times(responses, dead_letters)
    before = [
        rid for rid, s in submitted.items() if s.sent_at is not None and s.sent_at <= fault_end
    ]
    if any(rid not in done for rid in before):
        return None
    last = max((done[rid] for rid in before), default=fault_end)
    return max(0.0, last - fault_end)


async def claimed_after_answer(
    settings: Settings, tenant_id: str, sessions: Iterable[str], answered: set[str]
) -> int:
    """Sessions whose context still names an active request that has its terminal outcome."""
    redis = redis_from_url(settings.redis_url or "")
    try:
        store = ContextStore(redis, Keys(settings.state.key_prefix), ttl_s=60)
        claimed = 0
        for session_id in sorted(set(sessions)):
            context = await store.get(tenant_id, session_id)
            if context is not None and context.active_request in answered:
                claimed += 1
        return claimed
    finally:
        await redis.aclose()
