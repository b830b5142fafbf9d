"""The step journal on a real Redis (or Redis Cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.state.journal import _BEGIN, StepJournal
from agentstream.state.keys import Keys

pytestmark = pytest.mark.integration


async def test_a_step_begin_sent_again_after_a_lost_reply_finds_its_own_claim(
    redis: Any, unique_prefix: str
) -> None:
    """The pool retries a command whose connection dropped; if the first try had run, the step
    journal must not take its own claim for another worker's (that would dead-letter a
    side-effecting tool call as outcome unknown)."""
    journal = StepJournal(redis, Keys(unique_prefix), retention_s=60, owner="w1")
    key = journal.key("t", "s", "r1:t0:c0")
    args = journal.begin_args(rerun_unknown=False)
    begin = redis.register_script(_BEGIN)
    first = await begin(keys=[key], args=args)
    again = await begin(keys=[key], args=args)  # the same call, re-sent
    assert [StepJournal.parse_begin(r).status for r in (first, again)] == ["new", "new"]
    other = await journal.begin("t", "s", "r1:t0:c0")  # another call (a redelivery) is not
    assert other.status == "in_flight"
