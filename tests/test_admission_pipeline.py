"""Rate limits and budgets through the real pipeline (broker + Redis): the request is answered
(RATE_LIMITED / BUDGET_EXCEEDED with a retry-after and an ErrorEvent), never lost."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import pytest

from agentstream.admission.budget import seconds_until_next_day, utc_day
from agentstream.admission.keys import AdmissionKeys
from agentstream.client import AgentClient, AgentResponse
from agentstream.config import Settings
from agentstream.schemas.codec import AvroCodec
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.redis import connect

pytestmark = pytest.mark.integration


def total_tokens(response: AgentResponse) -> int:
    return int(response.usage["prompt_tokens"]) + int(response.usage["completion_tokens"])


async def test_eleventh_request_in_a_minute_is_rate_limited(settings_factory: Any) -> None:
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA, admission={"defaults": {"user_requests": 10, "window_s": 60}}
    )
    await ensure_topics(settings)
    codec = AvroCodec()
    async with (
        PipelineWorker(settings) as _,
        AgentClient(settings) as client,
        TopicReader(settings, settings.topics.errors, codec, "ErrorEvent") as errors,
    ):
        started = time.time()
        first_ten = await asyncio.gather(
            *(
                client.ask(f"add {i} and 1", session_id=f"a{i}", user_id="alice", tenant_id="acme")
                for i in range(10)
            )
        )
        assert [a.content for a in first_ten] == [f"The answer is {i + 1}." for i in range(10)]
        eleventh = await client.ask(
            "add 1 and 1", session_id="a10", user_id="alice", tenant_id="acme"
        )
        elapsed = time.time() - started

        assert (eleventh.state, eleventh.error_code) == ("ERROR", "RATE_LIMITED")
        assert eleventh.metadata["limit"] == "user_requests"
        # the window frees its first slot 60 s after the first admission, which happened after
        # `started`; the check happened before the answer arrived
        retry_after = float(eleventh.metadata["retry_after_s"])
        assert 60 - elapsed - 0.01 <= retry_after <= 60
        assert "try again in" in eleventh.content
        assert eleventh.content.startswith("Rate limit reached: at most 10 requests per minute")

        other = await client.ask("add 1 and 1", session_id="b0", user_id="bob", tenant_id="acme")
        assert (other.state, other.content) == ("COMPLETED", "The answer is 2.")

        await errors.wait_for(
            lambda: any(
                e["code"] == "RATE_LIMITED" and e["request_id"] == eleventh.request_id
                for e in errors.values
            ),
            what="the RATE_LIMITED error event",
        )
        event = next(e for e in errors.values if e["request_id"] == eleventh.request_id)
        assert event["retriable"] is True
        assert event["stage"] == "validation"


async def test_token_window_holds_within_limit_plus_one_request(settings_factory: Any) -> None:
    limit = 400
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA,
        # completion estimate 0: every reservation is below the actual usage, the worst case
        admission={"defaults": {"user_tokens": limit}, "completion_token_estimate": 0},
    )
    await ensure_topics(settings)
    completed: list[AgentResponse] = []
    denied: AgentResponse | None = None
    async with PipelineWorker(settings) as _, AgentClient(settings) as client:
        for i in range(40):
            answer = await client.ask(
                f"hello number {i}", session_id=f"s{i}", user_id="u", tenant_id="t"
            )
            if answer.state != "COMPLETED":
                denied = answer
                break
            completed.append(answer)
    assert denied is not None, "the token limit never bit"
    assert denied.error_code == "RATE_LIMITED"
    assert denied.metadata["limit"] == "user_tokens"
    assert 0 < float(denied.metadata["retry_after_s"]) <= 60
    used = [total_tokens(a) for a in completed]
    assert sum(used) <= limit + max(used)
    assert sum(used) > limit - max(used)  # it was the limit, not something else, that stopped it

    # what Redis booked for the window and the day is the actual usage, not the estimates
    keys = AdmissionKeys(settings.state.key_prefix)
    redis = connect(settings.redis_url or "")
    try:
        booked = await redis.hget(keys.user_tokens("t", "u") + ":c", "#total")
        day = await redis.hget(keys.day("t", utc_day(time.time())), "tokens")
    finally:
        await redis.aclose()
    assert int(booked or 0) == sum(used)
    assert int(day or 0) == sum(used)


async def run_cli(env: dict[str, str], *args: str) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentstream.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out


def cli_env(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AGENTSTREAM_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
            "AGENTSTREAM_REDIS_URL": settings.redis_url or "",
            "AGENTSTREAM_STATE__KEY_PREFIX": settings.state.key_prefix,
            "AGENTSTREAM_LOG_LEVEL": "WARNING",
            "COLUMNS": "200",  # the table is not wrapped
            **extra,
        }
    )
    return env


async def test_daily_budget_and_usage_command(settings_factory: Any) -> None:
    budget = {"acme": {"daily_tokens": 200}}
    settings: Settings = settings_factory(
        kafka=FAST_KAFKA, admission={"tenants": budget, "completion_token_estimate": 20}
    )
    await ensure_topics(settings)
    completed: list[AgentResponse] = []
    refusals: list[AgentResponse] = []
    async with PipelineWorker(settings) as _, AgentClient(settings) as client:
        for i in range(20):
            answer = await client.ask(
                f"hello number {i}", session_id=f"s{i}", user_id=f"u{i}", tenant_id="acme"
            )
            (completed if answer.state == "COMPLETED" else refusals).append(answer)
            if len(refusals) == 2:
                break
        other = await client.ask("hello", session_id="g", user_id="u", tenant_id="globex")
    assert other.state == "COMPLETED"  # budgets are per tenant
    assert [r.error_code for r in refusals] == ["BUDGET_EXCEEDED", "BUDGET_EXCEEDED"]
    # the first refusal is the LLM call whose estimate would cross the budget
    assert "would be exceeded" in refusals[0].content
    for refusal in refusals:
        assert refusal.metadata["limit"] == "daily_tokens"
        resets = seconds_until_next_day(time.time())
        assert resets - 1 <= float(refusal.metadata["retry_after_s"]) <= resets + 60
    used = sum(total_tokens(a) for a in completed)
    assert 0 < used <= 200

    env = cli_env(settings, {"AGENTSTREAM_ADMISSION__TENANTS": json.dumps(budget)})
    one = await run_cli(env, "usage", "--tenant", "acme", "--json")
    [acme] = json.loads(one)
    assert (acme["tenant_id"], acme["tokens"], acme["daily_tokens"]) == ("acme", used, 200)
    assert acme["tokens_remaining"] == 200 - used
    every = await run_cli(env, "usage", "--json")
    rows = {row["tenant_id"]: row for row in json.loads(every)}
    assert set(rows) == {"acme", "globex"}
    assert rows["globex"]["tokens"] == total_tokens(other)
    assert rows["globex"]["tokens_remaining"] is None  # no budget configured
    table = await run_cli(env, "usage")
    assert b"acme" in table
    assert f"{used} of 200".encode() in table
