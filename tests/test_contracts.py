"""The typed contracts match the .avsc files field for field, and round-trip through the codec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from agentstream.schemas import contracts as c
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.exceptions import SerializationError
from agentstream.schemas.loader import SCHEMA_NAMES, _read_files, full_name

NESTED = {
    "Usage": c.Usage,
    "ToolCallSummary": c.ToolCallSummary,
    "ToolCall": c.ToolCall,
    "ToolResult": c.ToolResult,
    "RequestProgress": c.RequestProgress,
}


def _fields(name: str) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in _read_files()[full_name(name)]["fields"]}


@pytest.mark.parametrize("name", [*SCHEMA_NAMES, *NESTED])
def test_struct_fields_match_the_schema(name: str) -> None:
    struct = c.CONTRACTS.get(name) or NESTED[name]
    info = {f.name: f for f in msgspec.structs.fields(struct)}
    schema = _fields(name)
    assert set(info) == set(schema), name
    for field_name, avro in schema.items():
        nullable = isinstance(avro["type"], list) and "null" in avro["type"]
        has_default = "default" in avro
        struct_field = info[field_name]
        struct_default = (
            struct_field.default is not msgspec.NODEFAULT
            or struct_field.default_factory is not msgspec.NODEFAULT
        )
        if nullable:
            assert struct_field.default is None, f"{name}.{field_name} should default to None"
        # a schema default must be a struct default (old writers omit the field)
        if has_default:
            assert struct_default, f"{name}.{field_name} has a schema default"


def test_every_top_level_schema_has_a_contract() -> None:
    assert set(c.CONTRACTS) == set(SCHEMA_NAMES)


def test_typed_round_trip() -> None:
    codec = AvroCodec()
    now = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    progress = c.RequestProgress(started_at=now, message_bytes=5)
    progress.add_usage(3, 4, 0.5)
    progress.add_stage_time("validation", 1.5)
    turn = c.GenerationTurn(
        request_id="r",
        session_id="s",
        user_id="u",
        tenant_id="t",
        turn=1,
        allowed_tools=["calculator"],
        metadata={"k": "v"},
        tool_results=[
            c.ToolResult(
                call_id="c1", name="calculator", content="3", is_error=False, duration_ms=2
            )
        ],
        progress=progress,
        deadline=now,
    )
    back = codec.decode_record(c.GenerationTurn, codec.encode_record(turn))
    assert back == turn
    assert back.progress.usage == c.Usage(prompt_tokens=3, completion_tokens=4, cost_usd=0.5)
    response = c.AgentResponse(
        response_id="x",
        request_id="r",
        session_id="s",
        user_id="u",
        tenant_id="t",
        content="",
        tool_calls=[],
        state=c.AgentState.COMPLETED,
        confidence=1.0,
        execution_time_ms=3,
        usage=c.Usage(),
        metadata={},
        created_at=now,
    )
    decoded = codec.decode_record(c.AgentResponse, codec.encode_record(response))
    assert decoded.state is c.AgentState.COMPLETED


def test_decoding_as_the_wrong_contract_is_a_serialization_error() -> None:
    codec = AvroCodec()
    request = c.AgentRequest(
        request_id="r",
        session_id="s",
        user_id="u",
        tenant_id="t",
        message="hi",
        created_at=datetime.now(UTC),
    )
    with pytest.raises(SerializationError):
        codec.decode_record(c.GenerationTurn, codec.encode_record(request))
