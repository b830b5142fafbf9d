"""What one fuzz case does with its input, and the rules it holds the outcome to.

Each target returns a short label of the outcome (counted per kind by the long run) or raises
:class:`Violation` when a rule is broken. Any other exception is a crash.

- :func:`decode_case`: bytes decoded as a contract end as a record or a ``SerializationError``;
  a record the codec accepts is written again to a stable canonical form (one known exception:
  an int field outside the int32 range is read but cannot be written; counted apart).
- :class:`ValidationHarness`: an AgentRequest (arbitrary field values, arbitrary headers) or
  arbitrary bytes on ``agent.requests``, through the real stages in process
  (:class:`agentstream.testing.TestPipeline`): every case ends as a response (``COMPLETED``, or
  ``ERROR`` with a code), an error event or a dead letter with a reason; never
  ``INTERNAL_ERROR`` (an unexpected exception in a stage), never silence.
  Mutated GenerationTurn and ToolCallBatch records on the generation and tool topics
  (:meth:`ValidationHarness.stage_case`) are held to the same rule.
- :func:`header_case`: the dead-letter/retry header parser and builders on arbitrary headers:
  a non-negative attempt count, a retry record only while tiers are left, a dead letter with its
  own headers once each, shrunk within the limit.
- :func:`forward_case`: the retry forwarder on arbitrary retry headers: forwards, holds until
  due, or ignores a non-retry record; never raises.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from agentstream.config import TopicSettings
from agentstream.processors.base import Inbound
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import CONTRACTS, AgentResponse, ErrorEvent
from agentstream.schemas.exceptions import SerializationError
from agentstream.schemas.records import Outbound
from agentstream.streams.message_size import record_size
from agentstream.streams.retry import RetryForwarder, schedule_retry
from agentstream.testing import TestPipeline

INTERNAL_ERROR = "INTERNAL_ERROR"
INT_RANGE = "outside the int range"
_REASONS = (
    ("empty payload", "empty"),
    ("shorter than", "short header"),
    ("wrong magic", "wrong magic byte"),
    ("unknown schema id", "unknown schema id"),
    ("expected", "another contract's schema id"),
    ("trailing bytes", "trailing bytes"),
    ("truncated", "truncated body"),
    ("cannot resolve", "schema resolution"),
    ("malformed", "malformed body"),
)


class Violation(AssertionError):
    """A rule of the target was broken (the input is in the message's context, not in it)."""


def reason_kind(reason: str) -> str:
    for needle, kind in _REASONS:
        if needle in reason:
            return kind
    return "typed check"


# -- codec --------------------------------------------------------------------------------------


def decode_case(codec: AvroCodec, name: str, data: bytes) -> str:
    try:
        codec.decode(name, data)
    except SerializationError as exc:
        return f"rejected: {reason_kind(exc.reason)}"
    contract = CONTRACTS[name]
    try:
        typed = codec.decode_record(contract, data)
    except SerializationError:
        return "rejected: typed check"
    try:
        canonical = codec.encode_record(typed)
    except SerializationError as exc:
        if INT_RANGE in exc.reason:
            # Known: fastavro reads an Avro int as any varint up to 64 bits, so the codec
            # accepts an int field outside the int32 range that it then refuses to write. A stage
            # that carries the field on fails at publish (a SERIALIZATION_ERROR dead letter).
            return "accepted, not writable again: int out of range"
        raise Violation(f"accepted {name} cannot be written again: {exc.reason}") from exc
    if codec.encode_record(codec.decode_record(contract, canonical)) != canonical:
        raise Violation(f"{name}: decode/encode is not stable")
    return "accepted"


# -- validation ---------------------------------------------------------------------------------


class ValidationHarness:
    """One in-process pipeline for many cases (use ``async with``)."""

    def __init__(self, timeout_s: float = 20.0) -> None:
        self.pipeline = TestPipeline(timeout_s=timeout_s)
        self.topics = self.pipeline.settings.topics

    async def __aenter__(self) -> ValidationHarness:
        await self.pipeline.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pipeline.__aexit__(*exc)

    async def request_case(self, record: dict[str, Any], headers: list[tuple[str, bytes]]) -> str:
        try:
            value = self.pipeline.codec.encode("AgentRequest", record)
        except SerializationError:
            return "refused by the client's codec"
        return await self.bytes_case(value, str(record["session_id"]), headers)

    async def bytes_case(
        self,
        value: bytes,
        key: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        topic: str | None = None,
    ) -> str:
        p = self.pipeline
        marks = {topic: len(records) for topic, records in p.published.items()}
        p.publish_raw(topic or self.topics.requests, value, key or None, headers)
        await p.run_until_quiet()
        new = {
            t: rs[marks.get(t, 0) :] for t, rs in p.published.items() if len(rs) > marks.get(t, 0)
        }
        return self._outcome(new)

    def _outcome(self, new: dict[str, list[Outbound]]) -> str:
        codec = self.pipeline.codec
        labels: list[str] = []
        for record in new.get(self.topics.responses, []):
            response = codec.decode_record(AgentResponse, record.value)
            if response.state != "COMPLETED" and not response.error_code:
                raise Violation(f"a {response.state} response without an error code")
            labels.append(f"response {response.state} {response.error_code or ''}".strip())
        for topic, records in new.items():
            if topic.endswith(self.topics.dlq_suffix):
                for record in records:
                    code = dl.header_map(list(record.headers)).get(dl.ERROR_CODE, "")
                    if not code:
                        raise Violation(f"a dead letter on {topic} without a reason")
                    labels.append(f"dead letter {code}")
        for record in new.get(self.topics.errors, []):
            labels.append(f"error event {codec.decode_record(ErrorEvent, record.value).code}")
        if not labels:
            raise Violation("no response, error event or dead letter")
        if any(INTERNAL_ERROR in label for label in labels):
            raise Violation(f"an unexpected error in a stage: {labels}")
        return labels[0]

    async def stage_case(self, contract: str, value: bytes) -> str:
        """Bytes (a mutated GenerationTurn or ToolCallBatch) on the topic of that stage."""
        topic = self.topics.generation if contract == "GenerationTurn" else self.topics.tool_calls
        return await self.bytes_case(value, "s0", topic=topic)


# -- dead-letter and retry headers --------------------------------------------------------------

_TOPICS = TopicSettings()


def _inbound(headers: list[tuple[str, bytes]], topic: str = "agent.generation") -> Inbound:
    return Inbound(
        topic=topic,
        partition=0,
        offset=7,
        timestamp_ms=0,
        key=b"session",
        value=b"value",
        headers=list(headers),
    )


def header_case(headers: list[tuple[str, bytes]], limit: int) -> str:
    msg = _inbound(headers)
    attempts = dl.prior_attempts(msg)
    if attempts < 0:
        raise Violation(f"prior_attempts gave {attempts}")
    dl.header_map(msg.headers)
    label = _retry_label(msg, attempts)
    letter = dl.dead_letter(
        msg,
        dlq_topic="agent.generation.dlq",
        group="g",
        stage="generation",
        code="LLM_UNAVAILABLE",
        error=RuntimeError("x" * (limit // 2)),
        attempt=attempts + 1,
    )
    names = Counter(k for k, _ in letter.headers)
    if not dl.is_dead_letter(letter) or any(names[h] > 1 for h in dl.DLQ_HEADERS):
        raise Violation("a dead letter without its own headers exactly once")
    if dl.header_map(letter.headers)[dl.ERROR_CODE] != "LLM_UNAVAILABLE":
        raise Violation("a dead letter whose error code is not the one given")
    shrunk = dl.within_limit(letter, limit, record_size)
    if record_size(shrunk) > limit and any(k not in dl.KEPT_HEADERS for k, _ in shrunk.headers):
        raise Violation("a dead letter over the limit that still has the original's headers")
    return label


def _retry_label(msg: Inbound, attempts: int) -> str:
    tiers = len(_TOPICS.retry_tiers_s)
    scheduled = schedule_retry(msg, _TOPICS, "LLM_UNAVAILABLE")
    if (scheduled is None) != (attempts >= tiers):
        raise Violation(f"retry record {scheduled is not None} after {attempts} attempt(s)")
    if scheduled is None:
        return "tiers used up"
    counts = [v for k, v in scheduled.headers if k == dl.ATTEMPT]
    if counts != [str(attempts + 1).encode()]:
        raise Violation(f"retry record's attempt headers {counts} after {attempts} attempt(s)")
    return f"retry tier {attempts}"


async def forward_case(forwarder: RetryForwarder, headers: list[tuple[str, bytes]]) -> str:
    msg = _inbound(headers, topic="agent.generation.retry.5s")
    try:
        result = await asyncio.wait_for(forwarder(msg), 0.002)
    except TimeoutError:
        return "held until due"
    except ValueError as exc:
        raise Violation(f"the retry forwarder raised {type(exc).__name__}") from exc
    return "forwarded" if result.records else "not a retry record"
