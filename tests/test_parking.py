"""Durable parking (state/parking.py) on a real Redis, and the approval rules."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentstream.state.keys import Keys
from agentstream.state.parking import ParkedRecord, ParkingLot, ParkRef
from agentstream.tools.approval import approval_required
from agentstream.tools.settings import ApprovalRule
from tests.support.redis import connect

RECORD = ParkedRecord(
    topic="agent.tool-calls",
    key=b"s",
    value=b"\x00\x00\x00\x00\x03\xffbinary",
    headers=[("traceparent", b"00-abc-01"), ("empty", b"")],
)
REF = ParkRef(tenant_id="t", session_id="s", park_id="r1:t0", user_id="u")


@pytest.fixture
async def lot(redis_url: str, unique_prefix: str) -> Any:
    client = connect(redis_url)
    yield ParkingLot(client, Keys(unique_prefix), retention_s=60, context_ttl_s=60)
    await client.aclose()


async def _park(lot: ParkingLot, waits: list[str], due_ms: int | None = None) -> str:
    now = int(time.time() * 1000)
    parked = await lot.park(
        REF,
        request_id="r1",
        wait_ids=waits,
        record=RECORD,
        due_ms=now + 60_000 if due_ms is None else due_ms,
        now_ms=now,
    )
    return parked.status


@pytest.mark.integration
async def test_the_last_resolution_hands_the_record_back_once(lot: ParkingLot) -> None:
    assert await _park(lot, ["r1:t0:c0", "r1:t0:c1"]) == "parked"
    assert await _park(lot, ["r1:t0:c0", "r1:t0:c1"]) == "parked"  # idempotent
    first = await lot.resolve(REF, "r1:t0:c0", "APPROVE")
    assert (first.first, first.resume) == (True, None)
    again = await lot.resolve(REF, "r1:t0:c0", "DENY")  # a second decision changes nothing
    assert (again.first, again.effective, again.resume) == (False, "APPROVE", None)
    last = await lot.resolve(REF, "r1:t0:c1", "DENY")
    assert last.first
    assert last.resume == RECORD
    # not confirmed yet (the worker may have died before publishing): handed back again
    redelivered = await lot.resolve(REF, "r1:t0:c1", "DENY")
    assert not redelivered.first
    assert redelivered.resume == RECORD
    await lot.resumed(REF)
    assert (await lot.resolve(REF, "r1:t0:c1", "DENY")).resume is None
    found = await lot.resolutions("t", "s", ["r1:t0:c0", "r1:t0:c1"])
    assert found == {"r1:t0:c0": "APPROVE", "r1:t0:c1": "DENY"}


@pytest.mark.integration
async def test_a_decision_before_the_park_counts(lot: ParkingLot) -> None:
    """A batch redelivered after its decision arrived (or a decision racing the park)."""
    early = await lot.resolve(REF, "r1:t0:c0", "APPROVE")
    assert early.first
    assert early.resume is None
    assert await _park(lot, ["r1:t0:c0"]) == "decided"
    assert await _park(lot, ["r1:t0:c0", "r1:t0:c1"]) == "parked"  # one still open
    assert (await lot.resolve(REF, "r1:t0:c1", "DENY")).resume == RECORD


@pytest.mark.integration
async def test_parks_past_due_are_leased_to_one_sweep(lot: ParkingLot) -> None:
    now = int(time.time() * 1000)
    assert await _park(lot, ["r1:t0:c0", "r1:t0:c1"], due_ms=now - 1) == "parked"
    assert await lot.due(now, lease_ms=30_000) == [REF]
    assert await lot.due(now, lease_ms=30_000) == []  # leased
    assert await lot.due(now + 31_000, lease_ms=30_000) == [REF]  # the lease ended
    await lot.resolve(REF, "r1:t0:c0", "TIMEOUT")
    assert await lot.open_waits(REF) == ["r1:t0:c1"]
    await lot.resolve(REF, "r1:t0:c1", "TIMEOUT")
    await lot.resumed(REF)
    assert await lot.open_waits(REF) is None
    assert await lot.due(now + 120_000, lease_ms=30_000) == []  # dropped from the index


def test_the_last_matching_rule_decides() -> None:
    rules = [
        ApprovalRule(tools=["fs.*", "counter"]),
        ApprovalRule(tools=["fs.read*"], approval="none"),
        ApprovalRule(tools=["*"], tenants=["bank-*"], agents=["ops"]),
    ]

    def required(tool: str, tenant: str = "acme", agent: str | None = None) -> bool:
        return approval_required(rules, tool=tool, tenant_id=tenant, agent=agent)

    assert required("fs.write_file")
    assert not required("fs.read_file")
    assert required("counter")
    assert not required("calculator")
    assert required("calculator", tenant="bank-1", agent="ops")
    assert not required("calculator", tenant="bank-1")  # the default agent
    assert required("fs.read_file", tenant="bank-1", agent="ops")
    assert not approval_required([], tool="fs.write_file", tenant_id="acme", agent=None)
