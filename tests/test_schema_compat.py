"""Contract versions: fixed ids, every contract released, and both-way compatibility (CI gate).

A change to an ``.avsc`` fails here when it is not backward and forward compatible with every
released version of its record (``schemas/released/``), or when it is not released yet
(``make schemas-release`` freezes it under the next id). docs/contract.md has the rules.
"""

from __future__ import annotations

import copy
import io
import struct
from collections.abc import Callable
from typing import Any

import fastavro
import pytest

from agentstream.schemas import release
from agentstream.schemas.catalog import LOCAL_IDS
from agentstream.schemas.codec import AvroCodec
from agentstream.schemas.compat import check_against_released, incompatibilities
from agentstream.schemas.contracts import AgentResponse
from agentstream.schemas.loader import AvroSchema, builtin_schemas, released_schemas

#: Every released schema id and its record. Ids are never reused or renumbered: a new version
#: gets the next id (append a line here when you release one).
RELEASED_IDS = {
    1: "io.agentstream.AgentRequest",
    2: "io.agentstream.GenerationTurn",
    3: "io.agentstream.ToolCallBatch",
    4: "io.agentstream.AgentResponse",
    5: "io.agentstream.ErrorEvent",
    6: "io.agentstream.MetricsEvent",
    7: "io.agentstream.AgentResponse",  # + request_metadata (the request's, echoed)
    8: "io.agentstream.AgentRequest",  # + previous_response_id (history-loss detection)
    9: "io.agentstream.GenerationTurn",  # + message (the user's message rides with turn 0)
    10: "io.agentstream.AgentRequest",  # + stream (issue 12), agent (issue 17)
    11: "io.agentstream.GenerationTurn",  # + stream, agent
    12: "io.agentstream.ToolCallBatch",  # + stream, agent
    13: "io.agentstream.AgentResponse",  # + agent, agent_version; AgentState + CANCELLED
    14: "io.agentstream.MetricsEvent",  # + feedback_*, agent, agent_version
    15: "io.agentstream.StreamDelta",
    16: "io.agentstream.Feedback",
    17: "io.agentstream.CancelRequest",  # first release (issue 12: cancellation)
    18: "io.agentstream.ApprovalRequest",  # human approval (first release)
    19: "io.agentstream.ApprovalDecision",
    20: "io.agentstream.ApprovalAudit",
    21: "io.agentstream.DelegationResult",  # delegation (first release)
}
Definition = dict[str, Any]


def test_released_ids_never_change() -> None:
    assert {i: s.full_name for i, s in released_schemas().items()} == RELEASED_IDS


def test_every_current_contract_is_released() -> None:
    pending = release.unreleased()
    assert not pending, (
        f"unreleased contract versions {pending}: run `make schemas-release` to freeze them "
        "under their ids (schemas/released/), and add them to RELEASED_IDS"
    )
    for name, schema_id in LOCAL_IDS.items():
        assert released_schemas()[schema_id].full_name == name


def test_current_contracts_are_compatible_with_every_released_version() -> None:
    assert check_against_released() == []


def _current(name: str) -> Definition:
    return copy.deepcopy(dict(builtin_schemas()[f"io.agentstream.{name}"].definition))


def _changed(name: str, change: Callable[[Definition], None]) -> dict[str, AvroSchema]:
    definition = _current(name)
    change(definition)
    changed = AvroSchema.from_definition(definition)
    return {changed.full_name: changed}  # the other contracts are checked above


def _add_optional(d: Definition) -> None:  # what issue 16 adds to AgentRequest
    d["fields"].append(
        {"name": "previous_response_id", "type": ["null", "string"], "default": None}
    )


def _add_with_default(d: Definition) -> None:
    d["fields"].append({"name": "priority", "type": "int", "default": 0})


def test_optional_field_with_default_is_accepted() -> None:
    assert check_against_released(_changed("AgentRequest", _add_optional)) == []
    assert check_against_released(_changed("AgentRequest", _add_with_default)) == []


def _add_required(d: Definition) -> None:
    d["fields"].append({"name": "priority", "type": "int"})


def _remove_required(d: Definition) -> None:
    d["fields"] = [f for f in d["fields"] if f["name"] != "user_id"]


def _retype(d: Definition) -> None:
    for f in d["fields"]:
        if f["name"] == "message":
            f["type"] = "long"


def _narrow_union(d: Definition) -> None:
    for f in d["fields"]:
        if f["name"] == "deadline":
            f["type"] = "null"


def _drop_enum_symbol(d: Definition) -> None:
    # the default goes too: with it, a reader maps the dropped symbol to ERROR and no read fails
    for f in d["fields"]:
        if f["name"] == "state":
            f["type"]["symbols"] = [s for s in f["type"]["symbols"] if s != "COMPLETED"]
            f["type"].pop("default")


@pytest.mark.parametrize(
    ("name", "change", "direction"),
    [
        ("AgentRequest", _add_required, "backward"),  # old requests lack it
        ("AgentRequest", _remove_required, "forward"),  # old readers need it
        ("AgentRequest", _retype, "backward"),
        ("AgentRequest", _narrow_union, "backward"),
        ("AgentResponse", _drop_enum_symbol, "backward"),
    ],
)
def test_incompatible_change_is_rejected(
    name: str, change: Callable[[Definition], None], direction: str
) -> None:
    problems = check_against_released(_changed(name, change))
    assert problems
    assert any(f"not {direction} compatible" in p for p in problems), problems
    assert all(f"io.agentstream.{name}" in p for p in problems)


def test_versions_of_different_records_are_not_compared() -> None:
    schemas = builtin_schemas()
    request, response = (
        schemas["io.agentstream.AgentRequest"],
        schemas["io.agentstream.AgentResponse"],
    )
    assert incompatibilities(request, response) == [
        "io.agentstream.AgentResponse is not a version of io.agentstream.AgentRequest"
    ]


def test_release_check_fails_on_an_unreleased_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(release, "unreleased", lambda: {8: "io.agentstream.AgentRequest"})
    assert release.main(["--check"]) == 1


def test_response_written_under_the_first_version_reads_as_current() -> None:
    """A response of schema id 4 (before request_metadata) decodes with an empty echo."""
    old = released_schemas()[4]
    record = {f["name"]: _value(f) for f in old.definition["fields"]}
    body = io.BytesIO()
    fastavro.schemaless_writer(body, old.parsed, record)
    decoded = AvroCodec().decode_record(AgentResponse, struct.pack(">bI", 0, 4) + body.getvalue())
    assert decoded.request_metadata == {}
    assert decoded.metadata == {"model": "m"}


def _value(field: dict[str, Any]) -> Any:
    samples: dict[str, Any] = {
        "tool_calls": [],
        "state": "COMPLETED",
        "confidence": 1.0,
        "execution_time_ms": 5,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "cost_usd": 0.0},
        "error_code": None,
        "metadata": {"model": "m"},
        "created_at": 1_700_000_000_000,
    }
    return samples.get(field["name"], "x")


def test_cancelled_is_the_one_accepted_break_and_later_symbols_read_as_the_default() -> None:
    """CANCELLED cannot be read by AgentResponse versions 4 and 7 (their enum has no default):
    accepted on purpose (compat.ACCEPTED_NEW_SYMBOLS). Nothing else breaks them, and from
    version 13 on a symbol the reader does not know reads as ERROR."""
    from agentstream.schemas import compat

    current = builtin_schemas()["io.agentstream.AgentResponse"]
    for old_id in (4, 7):
        old = released_schemas()[old_id]
        assert compat.unreadable(current, old) is not None  # CANCELLED: an old reader fails
        assert incompatibilities(old, current) == []  # with the accepted symbol left out

    def add_symbol(d: Definition) -> None:
        state = next(f for f in d["fields"] if f["name"] == "state")
        state["type"]["symbols"].append("PAUSED")

    newer = _changed("AgentResponse", add_symbol)["io.agentstream.AgentResponse"]
    assert compat.unreadable(newer, current) is None  # PAUSED reads as the default
    buffer = io.BytesIO()
    record = next(iter(compat._generated(newer, 1)))
    record["state"] = "PAUSED"  # type: ignore[index]
    fastavro.schemaless_writer(buffer, newer.parsed, record)
    buffer.seek(0)
    read = fastavro.schemaless_reader(buffer, newer.parsed, current.parsed)
    assert read["state"] == "ERROR"  # type: ignore[index]
