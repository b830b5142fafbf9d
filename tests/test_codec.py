"""AvroCodec: round trips, wire-format errors, encode validation and schema evolution."""

from __future__ import annotations

import copy
import io
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest

from agentstream.config import Settings
from agentstream.exceptions import AgentStreamError
from agentstream.schemas.catalog import LOCAL_IDS, LocalCatalog
from agentstream.schemas.codec import SCHEMA_NAMES, AvroCodec, codec_from_settings
from agentstream.schemas.exceptions import SchemaNotFoundError, SerializationError
from agentstream.schemas.loader import builtin_schemas, released_schemas
from agentstream.schemas.registry import SchemaRegistryCatalog

NOW = datetime(2026, 11, 24, 12, 30, 15, 123000, tzinfo=UTC)


def _summary(call_id: str, *, is_error: bool = False) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "name": "calculator",
        "turn": 0,
        "is_error": is_error,
        "error_code": "TOOL_TIMEOUT" if is_error else None,
        "duration_ms": 12.5,
    }


def _usage() -> dict[str, Any]:
    return {"prompt_tokens": 812, "completion_tokens": 96, "cost_usd": 0.00231}


def _progress() -> dict[str, Any]:
    return {
        "started_at": NOW,
        "message_bytes": 42,
        "turn": 1,
        "llm_calls": 1,
        "usage": _usage(),
        "tool_calls": [_summary("call-1"), _summary("call-2", is_error=True)],
        "stage_ms": {"ingest": 1.25, "generation": 310.0, "tools": 12.5},
        "degraded": False,
    }


def _identity() -> dict[str, Any]:
    return {
        "request_id": "req-7f3a",
        "session_id": "sess-19",
        "user_id": "user-5",
        "tenant_id": "acme",
    }


SAMPLES: dict[str, dict[str, Any]] = {
    "AgentRequest": {
        **_identity(),
        "message": "What is 17 * 23? Ünïcødé ok ✓",
        "allowed_tools": ["calculator", "clock"],
        "metadata": {"channel": "web", "locale": "de-DE"},
        "created_at": NOW,
        "deadline": NOW + timedelta(seconds=30),
        "previous_response_id": "3f0c3a54-6a55-5b0e-9d0e-2f4a0e5b7c11",
        "stream": True,
        "agent": "support",
    },
    "GenerationTurn": {
        **_identity(),
        "turn": 1,
        "allowed_tools": ["calculator"],
        "metadata": {"channel": "web"},
        "tool_results": [
            {
                "call_id": "call-1",
                "name": "calculator",
                "content": "391",
                "is_error": False,
                "error_code": None,
                "duration_ms": 3.5,
            }
        ],
        "progress": _progress(),
        "deadline": None,
        "message": None,
        "stream": False,
        "agent": "support",
    },
    "ToolCallBatch": {
        **_identity(),
        "turn": 0,
        "allowed_tools": ["calculator"],
        "metadata": {},
        "calls": [
            {"call_id": "call-1", "name": "calculator", "arguments_json": '{"expr": "17*23"}'}
        ],
        "progress": _progress(),
        "deadline": NOW + timedelta(minutes=1),
        "stream": True,
        "agent": None,
    },
    "AgentResponse": {
        "response_id": "resp-1",
        **_identity(),
        "content": "17 * 23 = 391",
        "tool_calls": [_summary("call-1")],
        "state": "COMPLETED",
        "confidence": 0.93,
        "execution_time_ms": 412,
        "usage": _usage(),
        "error_code": None,
        "metadata": {"channel": "web"},
        "created_at": NOW,
        "request_metadata": {"trace": "t-1"},
        "agent": "support",
        "agent_version": "0123456789ab",
    },
    "ErrorEvent": {
        "event_id": "evt-1",
        "request_id": "req-7f3a",
        "session_id": "sess-19",
        "tenant_id": None,
        "code": "LLM_TIMEOUT",
        "message": "model call timed out after 60 s",
        "stage": "generation",
        "retriable": True,
        "attempt": 3,
        "time": NOW,
        "origin_topic": "agent.generation",
        "origin_partition": 5,
        "origin_offset": 2**40,
        "cause": None,
    },
    "MetricsEvent": {
        **_identity(),
        "outcome": "COMPLETED",
        "error_code": None,
        "total_latency_ms": 412.7,
        "stage_latency_ms": {"generation": 310.0, "tools": 12.5},
        "llm_calls": 2,
        "turns": 2,
        "prompt_tokens": 1624,
        "completion_tokens": 192,
        "cost_usd": 0.0046,
        "tool_calls": 1,
        "tool_errors": 0,
        "time": NOW,
        "tool_details": [
            {
                "call_id": "c1",
                "name": "calculator",
                "turn": 0,
                "is_error": False,
                "error_code": None,
                "duration_ms": 0.4,
            }
        ],
        "model": "local-rules",
        "feedback_rating": None,
        "feedback_comment_chars": None,
        "agent": "support",
        "agent_version": "0123456789ab",
    },
    "StreamDelta": {
        "request_id": "req-7f3a",
        "session_id": "sess-19",
        "tenant_id": "acme",
        "turn": 1,
        "attempt": 2,
        "sequence": 0,
        "text": "17 * 23 = ",
        "final": False,
        "time": NOW,
    },
    "Feedback": {
        "response_id": "resp-1",
        **_identity(),
        "rating": 5,
        "comment": "spot on ✓",
        "agent": None,
        "model": "local-rules",
        "created_at": NOW,
    },
    "CancelRequest": {
        "cancel_id": "c-5e1f",
        "request_id": "req-7f3a",
        "tenant_id": "acme",
        "requested_by": "u-42",
        "reason": "user pressed stop",
        "session_id": "sess-19",
        "created_at": NOW,
    },
    "ApprovalRequest": {
        "approval_id": "req-7f3a:t0:c1",
        **_identity(),
        "turn": 0,
        "call_id": "call-2",
        "tool": "fs.write_file",
        "arguments_json": '{"path": "/tmp/x"}',
        "requested_at": NOW,
        "expires_at": NOW + timedelta(minutes=10),
        "agent": None,
    },
    "ApprovalDecision": {
        "approval_id": "req-7f3a:t0:c1",
        **_identity(),
        "decision": "APPROVE",
        "approver_id": "ops@acme",
        "reason": None,
        "decided_at": NOW,
    },
    "ApprovalAudit": {
        "event_id": "evt-2",
        "approval_id": "req-7f3a:t0:c1",
        **_identity(),
        "decision": "DENY",
        "approver_id": "ops@acme",
        "reason": "not today",
        "decided_at": NOW,
        "outcome": "APPLIED",
        "effective_decision": "DENY",
        "recorded_at": NOW,
    },
    "DelegationResult": {
        **_identity(),
        "child_request_id": "req-7f3a:t0:c0",
        "response_id": "resp-2",
        "content": "The answer is 5.",
        "is_error": False,
        "error_code": None,
        "created_at": NOW,
    },
}


@pytest.fixture
def codec() -> AvroCodec:
    return AvroCodec()


def test_samples_cover_every_contract() -> None:
    assert set(SAMPLES) == set(SCHEMA_NAMES)
    assert len(SCHEMA_NAMES) == 13


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_round_trip(codec: AvroCodec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    assert data[0] == 0
    assert codec.peek_schema_id(data) == LOCAL_IDS[f"io.agentstream.{name}"]
    assert codec.decode(name, data) == SAMPLES[name]


async def test_decode_async_and_prepare_local(codec: AvroCodec) -> None:
    await codec.prepare()
    data = codec.encode("AgentRequest", SAMPLES["AgentRequest"])
    assert await codec.decode_async("AgentRequest", data) == SAMPLES["AgentRequest"]


def test_local_ids_are_the_released_ones() -> None:
    # AgentResponse 4 -> 7: request_metadata; AgentRequest 1 -> 8: previous_response_id;
    # ids: docs/contract.md, "Schema ids"
    ids = [LOCAL_IDS[f"io.agentstream.{n}"] for n in SCHEMA_NAMES]
    assert ids == [10, 11, 12, 13, 5, 14, 15, 16, 17, 18, 19, 20, 21]


def test_timestamps_decode_as_aware_utc(codec: AvroCodec) -> None:
    record = dict(SAMPLES["AgentRequest"], created_at=int(NOW.timestamp() * 1000))
    decoded = codec.decode("AgentRequest", codec.encode("AgentRequest", record))
    assert decoded["created_at"] == NOW
    assert decoded["created_at"].tzinfo is not None


def test_defaults_fill_omitted_optional_fields(codec: AvroCodec) -> None:
    record = {k: v for k, v in SAMPLES["AgentRequest"].items() if k not in {"deadline", "metadata"}}
    decoded = codec.decode("AgentRequest", codec.encode("AgentRequest", record))
    assert decoded["deadline"] is None
    assert decoded["metadata"] == {}


def test_serialization_error_is_project_error() -> None:
    assert issubclass(SchemaNotFoundError, SerializationError)
    assert issubclass(SerializationError, AgentStreamError)
    assert SerializationError.code == "SERIALIZATION_ERROR"


# -- decode errors --------------------------------------------------------------------------


def _reason(codec: AvroCodec, data: bytes, name: str = "AgentRequest") -> str:
    with pytest.raises(SerializationError) as info:
        codec.decode(name, data)
    return info.value.reason


def test_empty_bytes(codec: AvroCodec) -> None:
    assert "empty payload" in _reason(codec, b"")


def test_short_header(codec: AvroCodec) -> None:
    assert "shorter than the 5-byte header" in _reason(codec, b"\x00\x00\x01")


def test_wrong_magic_byte(codec: AvroCodec) -> None:
    assert "wrong magic byte 0x7b" in _reason(codec, b'{"request_id": "x"}')


def test_unknown_schema_id(codec: AvroCodec) -> None:
    with pytest.raises(SchemaNotFoundError) as info:
        codec.decode("AgentRequest", struct.pack(">bI", 0, 999) + b"\x02a")
    assert info.value.reason == "unknown schema id 999"


def test_schema_id_of_another_contract(codec: AvroCodec) -> None:
    data = codec.encode("AgentResponse", SAMPLES["AgentResponse"])
    response_id = LOCAL_IDS["io.agentstream.AgentResponse"]
    assert _reason(codec, data) == (
        f"schema id {response_id} is io.agentstream.AgentResponse, "
        "expected io.agentstream.AgentRequest"
    )


@pytest.mark.parametrize("cut", [6, 20, -1])
def test_truncated_payload(codec: AvroCodec, cut: int) -> None:
    data = codec.encode("AgentRequest", SAMPLES["AgentRequest"])
    reason = _reason(codec, data[:cut])
    request_id = LOCAL_IDS["io.agentstream.AgentRequest"]
    assert f"truncated or malformed io.agentstream.AgentRequest body (schema id {request_id})" in (
        reason
    )


def test_trailing_garbage(codec: AvroCodec) -> None:
    data = codec.encode("AgentRequest", SAMPLES["AgentRequest"])
    request_id = LOCAL_IDS["io.agentstream.AgentRequest"]
    assert _reason(codec, data + b"junk") == (
        f"4 trailing bytes after io.agentstream.AgentRequest body (schema id {request_id})"
    )


def test_garbage_body(codec: AvroCodec) -> None:
    with pytest.raises(SerializationError):
        codec.decode("AgentResponse", struct.pack(">bI", 0, 4) + bytes(range(1, 200)))


def test_unknown_contract_name(codec: AvroCodec) -> None:
    with pytest.raises(SchemaNotFoundError, match="unknown contract 'Nope'"):
        codec.encode("Nope", {})


# -- encode errors --------------------------------------------------------------------------


def _encode_reason(codec: AvroCodec, name: str, record: dict[str, Any]) -> str:
    with pytest.raises(SerializationError) as info:
        codec.encode(name, record)
    return info.value.reason


def test_missing_required_field(codec: AvroCodec) -> None:
    record = dict(SAMPLES["AgentRequest"])
    del record["message"]
    assert _encode_reason(codec, "AgentRequest", record) == (
        "io.agentstream.AgentRequest: field io.agentstream.AgentRequest.message "
        "missing or null, expected string"
    )


def test_wrong_type_names_type_not_value(codec: AvroCodec) -> None:
    record = copy.deepcopy(SAMPLES["GenerationTurn"])
    record["progress"]["turn"] = "secret prompt text"
    reason = _encode_reason(codec, "GenerationTurn", record)
    assert reason == (
        "io.agentstream.GenerationTurn: field io.agentstream.RequestProgress.turn "
        "got str, expected int"
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("llm_calls", 1.5, "got float, expected int"),  # fastavro's writer would truncate
        ("turns", True, "got bool, expected int"),
        ("llm_calls", 2**40, "got an int outside the int range, expected int"),
        ("error_code", 7, "got int, expected one of null | string"),
        ("time", "yesterday", "got str, expected timestamp-millis"),
    ],
)
def test_wrong_types_rejected(codec: AvroCodec, field: str, value: Any, expected: str) -> None:
    record = dict(SAMPLES["MetricsEvent"], **{field: value})
    assert _encode_reason(codec, "MetricsEvent", record).endswith(expected)


def test_bad_enum_symbol(codec: AvroCodec) -> None:
    record = dict(SAMPLES["AgentResponse"], state="DONE")
    assert "field io.agentstream.AgentResponse.state" in _encode_reason(
        codec, "AgentResponse", record
    )


def test_naive_datetime_rejected(codec: AvroCodec) -> None:
    record = copy.deepcopy(SAMPLES["ToolCallBatch"])
    record["progress"]["started_at"] = datetime(2026, 1, 1, 12, 0)
    assert "field progress.started_at is a naive datetime" in _encode_reason(
        codec, "ToolCallBatch", record
    )


# -- evolution ------------------------------------------------------------------------------


def _old_agent_request() -> dict[str, Any]:
    """AgentRequest as it was before ``deadline`` existed."""
    current = builtin_schemas()["io.agentstream.AgentRequest"].definition
    old = copy.deepcopy(dict(current))
    old["fields"] = [f for f in old["fields"] if f["name"] != "deadline"]
    return old


def test_old_writer_schema_reads_as_current() -> None:
    catalog = LocalCatalog()
    old_id = catalog.register(_old_agent_request())
    assert old_id == max(released_schemas()) + 1
    assert catalog.register(_old_agent_request()) == old_id  # idempotent
    codec = AvroCodec(catalog)

    record = {k: v for k, v in SAMPLES["AgentRequest"].items() if k != "deadline"}
    body = io.BytesIO()
    old_schema = catalog.schema_for_id(old_id)
    assert old_schema is not None
    fastavro.schemaless_writer(body, old_schema.parsed, record)
    data = struct.pack(">bI", 0, old_id) + body.getvalue()

    decoded = codec.decode("AgentRequest", data)
    assert decoded == {**record, "deadline": None}


def test_previous_response_id_is_compatible_both_ways() -> None:
    """Old producers (no ``previous_response_id``) are read with null; old consumers read new
    requests and skip the field (Avro schema resolution, both directions)."""
    current = builtin_schemas()["io.agentstream.AgentRequest"].definition
    old = copy.deepcopy(dict(current))
    old["fields"] = [f for f in old["fields"] if f["name"] != "previous_response_id"]
    old_parsed = fastavro.parse_schema(old)
    new_parsed = fastavro.parse_schema(copy.deepcopy(dict(current)))
    record = SAMPLES["AgentRequest"]

    body = io.BytesIO()
    fastavro.schemaless_writer(body, old_parsed, record)  # an old producer: field dropped
    body.seek(0)
    read_new = fastavro.schemaless_reader(body, old_parsed, new_parsed)
    assert read_new == {**record, "previous_response_id": None}

    body = io.BytesIO()
    fastavro.schemaless_writer(body, new_parsed, record)  # a new producer, an old consumer
    body.seek(0)
    read_old = fastavro.schemaless_reader(body, new_parsed, old_parsed)
    assert read_old == {k: v for k, v in record.items() if k != "previous_response_id"}


def test_register_rejects_taken_id() -> None:
    catalog = LocalCatalog()
    with pytest.raises(SerializationError, match="already used"):
        catalog.register(_old_agent_request(), schema_id=1)


def test_register_rejects_invalid_schema() -> None:
    with pytest.raises(SerializationError, match="invalid Avro schema"):
        LocalCatalog().register({"type": "record", "name": "X", "fields": [{"name": "a"}]})


# -- contracts ------------------------------------------------------------------------------


def test_schemas_are_self_contained_and_documented() -> None:
    for name in SCHEMA_NAMES:
        schema = builtin_schemas()[f"io.agentstream.{name}"]
        # Parsing the JSON text alone (as a registry would) must succeed.
        fastavro.parse_schema(json.loads(schema.text))
        assert schema.definition.get("doc")
        assert all(field.get("doc") for field in schema.definition["fields"])


async def test_codec_from_settings() -> None:
    assert isinstance(codec_from_settings(Settings()).catalog, LocalCatalog)
    remote = codec_from_settings(Settings(schema_registry_url="http://127.0.0.1:1"))
    assert isinstance(remote.catalog, SchemaRegistryCatalog)
    await remote.aclose()


def test_metrics_event_written_before_tool_details_reads_with_defaults() -> None:
    """MetricsEvent gained two optional fields; events written without them still read."""
    current = builtin_schemas()["io.agentstream.MetricsEvent"].definition
    new_fields = ("tool_details", "model")
    old = {**current, "fields": [f for f in current["fields"] if f["name"] not in new_fields]}
    catalog = LocalCatalog()
    old_id = catalog.register(old)
    record = {k: v for k, v in SAMPLES["MetricsEvent"].items() if k not in new_fields}
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, old_id))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    decoded = AvroCodec(catalog).decode("MetricsEvent", buffer.getvalue())
    assert decoded["tool_details"] == []
    assert decoded["model"] is None


def test_error_event_written_before_cause_reads_with_none() -> None:
    """ErrorEvent gained ``cause`` (with a default); events written without it still read."""
    current = builtin_schemas()["io.agentstream.ErrorEvent"].definition
    old = {**current, "fields": [f for f in current["fields"] if f["name"] != "cause"]}
    catalog = LocalCatalog()
    old_id = catalog.register(old)
    record = {k: v for k, v in SAMPLES["ErrorEvent"].items() if k != "cause"}
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, old_id))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
    decoded = AvroCodec(catalog).decode("ErrorEvent", buffer.getvalue())
    assert decoded == {**record, "cause": None}
    # and a new event carries it
    codec = AvroCodec()
    event = {**SAMPLES["ErrorEvent"], "code": "CIRCUIT_OPEN", "cause": "LLM_TIMEOUT"}
    assert codec.decode("ErrorEvent", codec.encode("ErrorEvent", event))["cause"] == "LLM_TIMEOUT"
