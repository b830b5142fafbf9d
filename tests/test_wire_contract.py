"""What docs/contract.md promises about keys, headers and response fields, through the real
stage handlers (agentstream.testing; the integration tests run the same code on a broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from agentstream.exceptions import ErrorCode
from agentstream.llm.base import LLMRequest, LLMResult
from agentstream.llm.exceptions import LLMServerError
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.contracts import AgentRequest
from agentstream.testing import FunctionModel, TestPipeline

GARBAGE = b"\x00\x00\x00\x00\x01garbage"


async def test_an_undecodable_records_error_event_keeps_its_key_and_names_its_position() -> None:
    async with TestPipeline() as p:
        topic = p.settings.topics.requests
        p.publish_raw(topic, GARBAGE, key="session-9")
        p.publish_raw(topic, GARBAGE, key="session-9")
        p.publish_raw(topic, b"not avro", key=None)
        await p.run_until_quiet()
    events = p.errors
    records = p.published[p.settings.topics.errors]
    assert [r.key for r in records] == [b"session-9", b"session-9", None]
    assert [e.code for e in events] == ["UNDECODABLE"] * 3
    assert all(e.request_id == "" and e.session_id is None for e in events)
    assert [(e.origin_topic, e.origin_offset) for e in events] == [
        (topic, 0),
        (topic, 1),
        (topic, 2),
    ]
    assert len({e.event_id for e in events}) == 3  # one per record, not one per code


async def test_a_dead_letter_names_the_error_not_the_signal() -> None:
    async with TestPipeline() as p:
        p.publish_raw(p.settings.topics.requests, GARBAGE, key="k")
        await p.run_until_quiet()
    [letter] = p.dead_letters
    fqcn = dl.header_map(letter.headers)[dl.EXCEPTION_FQCN]
    assert fqcn == "agentstream.schemas.exceptions.SerializationError"


async def test_a_dead_letter_after_the_retry_tiers_names_the_model_error() -> None:
    def model(request: LLMRequest) -> LLMResult:
        raise LLMServerError("500")

    async with TestPipeline(llm=FunctionModel(model)) as p:
        request = AgentRequest(
            request_id="down",
            session_id="s",
            user_id="u",
            tenant_id="t",
            message="hi",
            created_at=datetime.now(UTC),
        )
        p.publish_raw(p.settings.topics.requests, p.codec.encode_record(request), key="s")
        await p.run_until_quiet()
    [letter] = p.dead_letters
    headers = dl.header_map(letter.headers)
    assert headers[dl.EXCEPTION_FQCN] == "agentstream.llm.exceptions.LLMServerError"
    assert headers[dl.ERROR_CODE] == "LLM_SERVER_ERROR"


async def test_a_response_echoes_the_request_metadata_apart_from_its_own() -> None:
    async with TestPipeline() as p:
        answer = await p.ask("add 2 and 3", allowed_tools=["calculator"], metadata={"trace": "t1"})
        refused = await p.ask("", metadata={"trace": "t2"})
    assert answer.request_metadata == {"trace": "t1"}
    assert {"model", "worker"} <= set(answer.metadata)
    assert "trace" not in answer.metadata
    assert (refused.error_code, refused.request_metadata) == ("EMPTY_MESSAGE", {"trace": "t2"})


async def test_the_reserved_pipeline_key_is_not_echoed() -> None:
    """``degraded_reason`` travels in a turn's metadata (the pipeline's note); not echoed."""
    async with TestPipeline(llm=FunctionModel(lambda request: LLMResult(content="ok"))) as p:
        answer = await p.ask("hi", metadata={"degraded_reason": "mine", "k": "v"})
    assert answer.request_metadata == {"k": "v"}


def test_every_error_code_is_documented_in_the_contract() -> None:
    contract = (Path(__file__).parent.parent / "docs" / "contract.md").read_text()
    rows = {line.split("`")[1] for line in contract.splitlines() if line.startswith("| `")}
    missing = [code.value for code in ErrorCode if code.value not in rows]
    assert not missing, f"docs/contract.md, Error codes: add {missing}"
