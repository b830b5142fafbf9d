"""Bad input, fuzzed (hypothesis, default example counts; ``python -m chaos fuzz`` runs 10^5).

The codec, the validation stage (the real stages in process, agentstream.testing.TestPipeline)
and the dead-letter/retry header parser take arbitrary input without crashing, and every case
ends as a record or a SerializationError (codec), or as a response, an error event or a dead
letter with a reason (pipeline). The rules are in chaos/fuzz/targets.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.contracts import GenerationTurn
from agentstream.schemas.exceptions import SerializationError
from agentstream.schemas.records import Inbound
from agentstream.streams.retry import RetryForwarder
from chaos.fuzz import strategies as s
from chaos.fuzz.corpus import seed_records
from chaos.fuzz.targets import (
    ValidationHarness,
    decode_case,
    forward_case,
    header_case,
    reason_kind,
)

SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
CODEC = AvroCodec()


@pytest.fixture(scope="module")
def seeds() -> dict[str, list[bytes]]:
    return asyncio.run(seed_records())


@pytest.fixture(scope="module")
def harness() -> Iterator[tuple[asyncio.Runner, ValidationHarness]]:
    with asyncio.Runner() as runner:
        harness = ValidationHarness()
        runner.run(harness.__aenter__())
        yield runner, harness
        runner.run(harness.__aexit__(None, None, None))


def test_seed_corpus_covers_every_contract(seeds: dict[str, list[bytes]]) -> None:
    assert set(seeds) == {
        "AgentRequest",
        "GenerationTurn",
        "ToolCallBatch",
        "AgentResponse",
        "ErrorEvent",
        "MetricsEvent",
    }
    for name, values in seeds.items():
        assert all(decode_case(CODEC, name, v) == "accepted" for v in values)


@given(st.tuples(s.contract_names, s.wire_bytes))
def test_decoding_arbitrary_bytes_is_a_record_or_a_serialization_error(
    case: tuple[str, bytes],
) -> None:
    decode_case(CODEC, *case)


@SLOW
@given(st.data())
def test_decoding_mutated_records_is_a_record_or_a_serialization_error(
    seeds: dict[str, list[bytes]], data: st.DataObject
) -> None:
    decode_case(CODEC, *data.draw(s.mutated(seeds)))


def test_reasons_are_classified() -> None:
    assert reason_kind("payload is 2 bytes, shorter than the 5-byte header") == "short header"
    assert reason_kind("AgentRequest: field x got int, expected string") == (
        "another contract's schema id"
    )


@SLOW
@given(s.agent_requests(), s.headers())
def test_any_agent_request_ends_in_a_response_an_error_event_or_a_dead_letter(
    harness: tuple[asyncio.Runner, ValidationHarness],
    record: dict[str, Any],
    headers: list[tuple[str, bytes]],
) -> None:
    runner, pipeline = harness
    runner.run(pipeline.request_case(record, headers))


@SLOW
@given(s.wire_bytes)
def test_any_bytes_on_the_request_topic_are_dead_lettered_with_a_reason(
    harness: tuple[asyncio.Runner, ValidationHarness], value: bytes
) -> None:
    runner, pipeline = harness
    outcome = runner.run(pipeline.bytes_case(value, "k"))
    assert outcome.startswith(("dead letter", "response", "error event")), outcome


@pytest.fixture(scope="module")
def stage_seeds(harness: tuple[asyncio.Runner, ValidationHarness]) -> dict[str, list[bytes]]:
    """Seeds run in the harness's own pipeline: mutated turns reach sessions it knows."""
    runner, pipeline = harness
    return runner.run(seed_records(pipeline.pipeline))


@SLOW
@given(st.data())
def test_mutated_turns_and_tool_calls_end_in_a_response_an_error_event_or_a_dead_letter(
    harness: tuple[asyncio.Runner, ValidationHarness],
    stage_seeds: dict[str, list[bytes]],
    data: st.DataObject,
) -> None:
    runner, pipeline = harness
    contract, value = data.draw(s.mutated(stage_seeds, ("GenerationTurn", "ToolCallBatch")))
    runner.run(pipeline.stage_case(contract, value))


@given(s.headers(), st.integers(256, 4096))
def test_dead_letter_headers_parse_and_build_from_any_headers(
    headers: list[tuple[str, bytes]], limit: int
) -> None:
    header_case(headers, limit)


@pytest.mark.parametrize(
    ("value", "attempts"),
    [(b"2", 2), (b"-5", 0), (b"+2", 0), (b" 3", 0), (b"1_000", 0), (b"9" * 5000, 0), (b"x", 0)],
)
def test_prior_attempts_reads_only_a_plain_count(value: bytes, attempts: int) -> None:
    msg = Inbound(
        topic="t", partition=0, offset=0, timestamp_ms=0, key=None, value=b"",
        headers=[(dl.ATTEMPT, value)],
    )  # fmt: skip
    assert dl.prior_attempts(msg) == attempts


@example([(dl.RETRY_DUE, "¹".encode()), (dl.RETRY_ORIGIN, b"agent.generation")])  # isdigit()
@given(s.headers())
def test_the_retry_forwarder_takes_any_headers(headers: list[tuple[str, bytes]]) -> None:
    asyncio.run(forward_case(RetryForwarder(), headers))


# A GenerationTurn whose progress.message_bytes is a varint outside the int32 range (found by
# the mutation fuzzer): fastavro reads it; the typed contracts' Int32 fields refuse it.
OUT_OF_RANGE_TURN = (
    b"\x00\x00\x00\x00\x02@91e2140cb00d4b92ab21bae652fec0d4\x04s0\x02u\x02t\x00\x02\x14calculator"
    b"\x00\x00\x00\xaa\xbe\x81\xe7\xc2h\xa7\xfa\xe6\xc8\x1e\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    b"\x00\x00\x00\x00\x02\x14validation{\x14\xaeG\xe1z\xe0?\x00\x00\x00"
)


def test_an_int_outside_the_int32_range_is_refused_by_the_typed_check() -> None:
    assert decode_case(CODEC, "GenerationTurn", OUT_OF_RANGE_TURN) == "rejected: typed check"


def test_the_codec_refuses_an_int_outside_the_int32_range_for_a_stage() -> None:
    """The stages decode typed contracts: the out-of-range int is refused there (the record is
    undecodable: dead-lettered at once), before any stage acts on it."""
    with pytest.raises(SerializationError, match=r"progress\.message_bytes"):
        CODEC.decode_record(GenerationTurn, OUT_OF_RANGE_TURN)
