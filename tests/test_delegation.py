"""Delegation over Kafka on the real broker and Redis (issue 17, item 5).

The worker process's model (tests/support/worker_proc.py) turns a message starting
``[delegate NAME] rest`` into a call of ``agent.NAME`` with message ``rest``: the call becomes a
child request through the pipeline's topics, the parent's batch parks until the child's final
response, which is the call's result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentstream.client import new_request
from agentstream.config import Settings
from tests.support.kafka import FAST_KAFKA
from tests.support.wait import wait_until
from tests.test_approvals import Harness, harness_factory
from tests.test_crash_recovery import Workers

pytestmark = pytest.mark.integration
__all__ = ["harness_factory"]  # the fixture, shared with the approval tests


@pytest.fixture
def setup(settings_factory: Any, tmp_path: Path) -> Iterator[tuple[Settings, Workers]]:
    agents = tmp_path / "agents"  # the catalog: agents a to d, each may call any tool
    agents.mkdir()
    for name in "abcd":
        (agents / f"{name}.toml").write_text(
            f'description = "Agent {name}"\ninstructions = "You are {name}."\ntools = ["*"]\n'
        )
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA,
        topics={"partitions": 2},
        tools={"approval_sweep_interval_s": 0.2},
        agents={"dir": agents},
    )
    workers = Workers(settings, slow_s=4.0)
    workers.env["AGENTSTREAM_TOOLS__APPROVAL_SWEEP_INTERVAL_S"] = "0.2"
    workers.env["AGENTSTREAM_AGENTS__DIR"] = str(agents)
    yield settings, workers
    workers.stop_all()


async def _ask(h: Harness, request_id: str, message: str) -> str:
    await h.client.submit(
        new_request(
            message,
            session_id=f"s-{request_id}",
            user_id="u",
            tenant_id="t",
            request_id=request_id,
            metadata={"rid": request_id},
        )
    )
    answer = await h.answer(request_id, deadline_s=60)
    return answer.content


async def test_a_delegation_of_depth_two_answers(
    setup: tuple[Settings, Workers], harness_factory: Any
) -> None:
    settings, workers = setup
    h: Harness = await harness_factory(settings)
    workers.start()
    content = await _ask(h, "d1", "[delegate a] [delegate b] add 2 and 3")
    assert content == "The agent.a tool returned: The agent.b tool returned: The answer is 5."
    # the children went through the pipeline as requests of their own, correlated by id
    for child, agent in (("d1:t0:c0", "a"), ("d1:t0:c0:t0:c0", "b")):
        answer = await h.answer(child)
        assert answer.agent == agent  # served by the catalog agent the call named


async def test_cycles_and_the_depth_limit_are_refused(
    setup: tuple[Settings, Workers], harness_factory: Any
) -> None:
    settings, workers = setup
    h: Harness = await harness_factory(settings)
    workers.start()
    cycle = await _ask(h, "c1", "[delegate a] [delegate a] hello")
    assert "delegation cycle refused: default -> a -> a" in cycle
    self_call = await _ask(h, "c2", "[delegate default] hello")
    assert "delegation cycle refused: default -> default" in self_call
    deep = await _ask(h, "c3", "[delegate a] [delegate b] [delegate c] [delegate d] hello")
    assert "delegation depth limit 3 reached (default -> a -> b -> c)" in deep
    unknown = await _ask(h, "c4", "[delegate zed] hello")
    assert "unknown agent 'zed'" in unknown


async def test_kill9_during_the_childs_run_neither_loses_nor_duplicates_the_answer(
    setup: tuple[Settings, Workers], harness_factory: Any
) -> None:
    settings, workers = setup
    h: Harness = await harness_factory(settings)
    first = workers.start()
    await h.client.submit(
        new_request(
            "[delegate a] [slow] hello",
            session_id="k",
            user_id="u",
            tenant_id="t",
            request_id="k1",
            metadata={"rid": "k1"},
        )
    )
    prefix = settings.state.key_prefix

    async def child_running() -> bool:  # the child's model call is sleeping
        return int(await h.redis.get(f"{prefix}:test:llm:unknown") or 0) >= 1

    await wait_until(child_running, "the child's model call", 30)
    workers.kill9(first)
    workers.start()
    answer = await h.answer("k1", deadline_s=90)
    assert answer.ok, answer.content
    assert answer.content.startswith("The agent.a tool returned: ")
    # a later request proves every redelivery was processed; the parent answered once
    after = await h.client.ask("add 1 and 1", session_id="k", user_id="u", tenant_id="t")
    assert after.content == "The answer is 2."
    assert len(h.seen["k1"]) == 1
