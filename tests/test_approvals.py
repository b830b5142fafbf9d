"""Human approval of tool calls on the real broker and Redis (issue 12, item 3).

A worker process (tests/support/worker_proc.py) serves a local model that asks for the
side-effecting ``counter`` tool on ``[tick]``; ``tools.approvals`` gates it. The calls must run
only after an approval, never after a denial or a timeout, and exactly once across a kill -9 of
the worker while the batch is parked. Decisions go through the same functions as
``agentstream approvals approve|deny``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentstream.client import AgentClient, AgentResponse, new_request
from agentstream.config import Settings
from agentstream.schemas.codec import AvroCodec, codec_from_settings
from agentstream.streams.admin import ensure_topics
from agentstream.streams.approvals_admin import decide, pending
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.redis import RedisClient, connect
from tests.test_crash_recovery import Workers

pytestmark = pytest.mark.integration


def _gated(settings_factory: Any, timeout_s: float) -> Settings:
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA,
        topics={"partitions": 1},
        tools={
            "approvals": [{"tools": ["counter"]}],
            "approval_timeout_s": timeout_s,
            "approval_sweep_interval_s": 0.2,
        },
    )
    return settings


def _workers(settings: Settings) -> Workers:
    group = Workers(settings, slow_s=0.0)
    t = settings.tools
    group.env.update(
        {
            "AGENTSTREAM_TOOLS__APPROVALS": json.dumps([r.model_dump() for r in t.approvals]),
            "AGENTSTREAM_TOOLS__APPROVAL_TIMEOUT_S": str(t.approval_timeout_s),
            "AGENTSTREAM_TOOLS__APPROVAL_SWEEP_INTERVAL_S": str(t.approval_sweep_interval_s),
        }
    )
    for name in ("approvals", "approval_decisions", "approval_audit"):
        group.env[f"AGENTSTREAM_TOPICS__{name.upper()}"] = getattr(settings.topics, name)
    return group


async def run_cli(workers: Workers, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "agentstream.cli", *args],
        env=workers.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Harness:
    """A client collecting responses, readers of the approval topics, Redis for the counter."""

    def __init__(self, settings: Settings, client: AgentClient, codec: AvroCodec) -> None:
        self.settings = settings
        self.client = client
        self.codec = codec
        self.seen: dict[str, list[AgentResponse]] = {}
        self.redis: RedisClient = connect(settings.redis_url or "")
        self.requests = TopicReader(settings, settings.topics.approvals, codec, "ApprovalRequest")
        self.audit = TopicReader(settings, settings.topics.approval_audit, codec, "ApprovalAudit")

    async def counter(self) -> int:
        return int(await self.redis.get(f"{self.settings.state.key_prefix}:test:counter") or 0)

    async def tick(self, request_id: str, session_id: str) -> str:
        await self.client.submit(
            new_request(
                "[tick] please",
                session_id=session_id,
                user_id="u",
                tenant_id="t",
                request_id=request_id,
                metadata={"rid": request_id},
            )
        )
        approval_id = f"{request_id}:t0:c0"
        await self.requests.wait_for(
            lambda: any(v["approval_id"] == approval_id for v in self.requests.values),
            what=f"the approval request of {request_id}",
        )
        return approval_id

    async def answer(self, request_id: str, deadline_s: float = 30.0) -> AgentResponse:
        deadline = time.monotonic() + deadline_s
        while request_id not in self.seen:
            assert time.monotonic() < deadline, f"no answer to {request_id}"
            await asyncio.sleep(0.05)
        return self.seen[request_id][0]

    async def audits(self, approval_id: str, n: int) -> list[dict[str, Any]]:
        def mine() -> list[dict[str, Any]]:
            return [v for v in self.audit.values if v["approval_id"] == approval_id]

        await self.audit.wait_for(lambda: len(mine()) >= n, what=f"{n} audit event(s)")
        return mine()


@pytest.fixture
async def harness_factory() -> AsyncIterator[Any]:
    opened: list[tuple[Harness, asyncio.Task[None]]] = []

    async def make(settings: Settings) -> Harness:
        await ensure_topics(settings)
        codec = codec_from_settings(settings)
        await codec.prepare()
        client = AgentClient(settings)
        await client.__aenter__()
        harness = Harness(settings, client, codec)
        await harness.requests.__aenter__()
        await harness.audit.__aenter__()

        async def collect() -> None:
            async for response in client.responses():
                harness.seen.setdefault(response.request_id, []).append(response)

        opened.append((harness, asyncio.create_task(collect())))
        return harness

    yield make
    for harness, task in opened:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await harness.requests.__aexit__()
        await harness.audit.__aexit__()
        await harness.client.__aexit__()
        await harness.codec.aclose()
        await harness.redis.aclose()


@pytest.fixture
def long_timeout(settings_factory: Any) -> Iterator[tuple[Settings, Workers]]:
    settings = _gated(settings_factory, timeout_s=120.0)
    workers = _workers(settings)
    yield settings, workers
    workers.stop_all()


@pytest.fixture
def short_timeout(settings_factory: Any) -> Iterator[tuple[Settings, Workers]]:
    settings = _gated(settings_factory, timeout_s=1.5)
    workers = _workers(settings)
    yield settings, workers
    workers.stop_all()


async def test_approved_call_runs_once_across_kill9_while_parked(
    long_timeout: tuple[Settings, Workers], harness_factory: Any
) -> None:
    settings, workers = long_timeout
    h: Harness = await harness_factory(settings)
    first = workers.start()
    approval_id = await h.tick("tick1", "s1")
    request = h.requests.values[-1]
    assert (request["tool"], request["call_id"]) == ("counter", "t0")
    assert json.loads(request["arguments_json"]) == {"index": 0, "hold": 0.0}
    # parked: the session waits, other sessions flow (on the same, single partition)
    other = await h.client.ask("add 1 and 2", session_id="s2", user_id="u", tenant_id="t")
    assert other.content == "The answer is 3."
    assert await h.counter() == 0
    assert "tick1" not in h.seen
    # a worker crash while parked loses nothing: the batch is held in Redis, not by a worker
    workers.kill9(first)
    workers.start()
    assert [v.request.approval_id for v in await pending(settings, h.codec)] == [approval_id]
    await decide(settings, h.codec, approval_id, approve=True, approver_id="alice", reason="ok")
    answer = await h.answer("tick1")
    assert answer.ok, answer.content
    assert answer.content == "The counter tool returned: counted 0"
    assert await h.counter() == 1
    # a second decision changes nothing and is audited as a duplicate
    await decide(settings, h.codec, approval_id, approve=False, approver_id="bob")
    first_audit, second_audit = await h.audits(approval_id, 2)
    assert (first_audit["outcome"], first_audit["decision"]) == ("APPLIED", "APPROVE")
    assert first_audit["approver_id"] == "alice"
    assert (second_audit["outcome"], second_audit["effective_decision"]) == ("DUPLICATE", "APPROVE")
    # the session is free again and the approved call never ran twice
    after = await h.client.ask("add 2 and 2", session_id="s1", user_id="u", tenant_id="t")
    assert after.content == "The answer is 4."
    assert await h.counter() == 1
    assert len(h.seen["tick1"]) == 1
    assert await pending(settings, h.codec) == []


async def test_denied_call_never_runs(
    long_timeout: tuple[Settings, Workers], harness_factory: Any
) -> None:
    settings, workers = long_timeout
    h: Harness = await harness_factory(settings)
    workers.start()
    approval_id = await h.tick("tick2", "s3")
    # through the CLI: list shows the call and its arguments, deny decides
    listed = await run_cli(workers, "approvals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (shown,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (shown["approval_id"], shown["tool"], shown["status"]) == (
        approval_id,
        "counter",
        "PENDING",
    )
    assert shown["arguments"] == {"index": 0, "hold": 0.0}
    unknown = await run_cli(workers, "approvals", "deny", "nope:t0:c0")
    assert unknown.returncode != 0
    assert "no approval 'nope:t0:c0'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    denied = await run_cli(
        workers, "approvals", "deny", approval_id, "--approver", "carol", "--reason", "too risky"
    )
    assert denied.returncode == 0, denied.stderr
    answer = await h.answer("tick2")
    assert answer.ok, answer.content
    assert "denied" in answer.content
    assert "too risky" in answer.content
    assert answer.tool_calls[0]["error_code"] == "TOOL_APPROVAL_DENIED"
    (audit,) = await h.audits(approval_id, 1)
    assert (audit["outcome"], audit["decision"], audit["reason"]) == (
        "APPLIED",
        "DENY",
        "too risky",
    )
    assert await h.counter() == 0


async def test_no_decision_in_time_is_a_denial(
    short_timeout: tuple[Settings, Workers], harness_factory: Any
) -> None:
    settings, workers = short_timeout
    h: Harness = await harness_factory(settings)
    workers.start()
    approval_id = await h.tick("tick3", "s4")
    answer = await h.answer("tick3")
    assert "no approval decision within 1.5 s" in answer.content
    (audit,) = await h.audits(approval_id, 1)
    assert (audit["decision"], audit["approver_id"]) == ("TIMEOUT", "agentstream:timeout")
    # an approval after the timeout is too late: audited, never run
    await decide(settings, h.codec, approval_id, approve=True, approver_id="dave")
    _, late = await h.audits(approval_id, 2)
    assert (late["outcome"], late["effective_decision"]) == ("DUPLICATE", "TIMEOUT")
    assert await h.counter() == 0
