"""The response cache through the real pipeline (broker + Redis): a hit skips the LLM, and an
answer is never served to another tenant, another user, a multi-turn session, a bypassing
request, or after a side-effecting tool or a read-only one whose results are not cacheable."""

from __future__ import annotations

from typing import Any

import pytest

from agentstream.client import AgentClient
from agentstream.config import Settings
from agentstream.llm.base import ToolSpec
from agentstream.llm.local import LocalRuleModel
from agentstream.processors.outcomes import response_id_for
from agentstream.state.redis import RedisClient
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from agentstream.tools.base import ToolPolicy
from agentstream.tools.builtin import CALCULATOR_SPEC, CalculatorTool
from agentstream.tools.registry import default_registry
from tests.support.kafka import FAST_KAFKA

pytestmark = pytest.mark.integration


@pytest.fixture
async def settings(settings_factory: Any) -> Settings:
    s: Settings = settings_factory(kafka=FAST_KAFKA, admission={"cache_enabled": True})
    await ensure_topics(s)
    return s


class ShopCalculator(CalculatorTool):
    """A calculator that (pretends it) books something: not read-only, so never cached."""

    name = "shop.calculator"

    @property
    def spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description=CALCULATOR_SPEC.description,
            input_schema=CALCULATOR_SPEC.input_schema,
        )

    @property
    def read_only(self) -> bool:
        return False


class CachedCalculator(ShopCalculator):
    """A read-only calculator configured cacheable (registered with a 60 s result TTL)."""

    name = "cached.calculator"

    @property
    def read_only(self) -> bool:
        return True


CACHED_TTL_S = 60


async def test_cache_hit_skips_the_llm_and_stays_in_its_tenant(settings: Settings) -> None:
    model = LocalRuleModel()
    async with PipelineWorker(settings, llm=model) as _, AgentClient(settings) as client:
        first = await client.ask("hello there", session_id="s1", user_id="u", tenant_id="acme")
        assert first.state == "COMPLETED"
        assert "cached" not in first.metadata
        assert model.calls == 1

        # same tenant, user and question in a new session: served from the cache
        again = await client.ask("hello   there ", session_id="s2", user_id="u", tenant_id="acme")
        assert model.calls == 1
        assert again.state == "COMPLETED"
        assert again.content == first.content
        assert again.metadata["cached"] == "true"
        assert again.metadata["cached_from"] == first.response_id
        assert again.response_id == response_id_for(again.request_id) != first.response_id
        assert again.confidence >= 0.8

        # another tenant (same user id, same question): never the other tenant's answer
        other = await client.ask("hello there", session_id="s1", user_id="u", tenant_id="globex")
        assert model.calls == 2
        assert "cached" not in other.metadata
        assert other.tenant_id == "globex"

        # another user of the same tenant: the key is per user too
        await client.ask("hello there", session_id="s3", user_id="v", tenant_id="acme")
        assert model.calls == 3

        # per-request bypass: neither read nor written
        bypass = await client.ask(
            "hello there",
            session_id="s4",
            user_id="u",
            tenant_id="acme",
            metadata={"cache": "bypass"},
        )
        assert model.calls == 4
        assert "cached" not in bypass.metadata

        # a different tool set or model route is a different question
        await client.ask(
            "hello there",
            session_id="s5",
            user_id="u",
            tenant_id="acme",
            allowed_tools=["calculator"],
        )
        assert model.calls == 5
        await client.ask(
            "hello there",
            session_id="s6",
            user_id="u",
            tenant_id="acme",
            metadata={"model": "other"},
        )
        assert model.calls == 6


async def test_only_single_turn_answers_of_cacheable_tools_are_cached(
    settings: Settings, redis: RedisClient
) -> None:
    model = LocalRuleModel()
    tools = default_registry()
    tools.register(ShopCalculator())
    cacheable = ToolPolicy(read_only=True, idempotent=True, cache_ttl_s=CACHED_TTL_S)
    tools.register(CachedCalculator(), policy=cacheable)
    async with (
        PipelineWorker(settings, llm=model, tools=tools) as _,
        AgentClient(settings) as client,
    ):
        # a follow-up in a session with history is not answered from the cache ...
        await client.ask("good morning", session_id="m1", user_id="u", tenant_id="t")
        await client.ask("how are you", session_id="m1", user_id="u", tenant_id="t")
        assert model.calls == 2
        follow_up = await client.ask("good morning", session_id="m1", user_id="u", tenant_id="t")
        assert model.calls == 3
        assert "cached" not in follow_up.metadata
        # ... and its answer (a multi-turn one) was not stored: only the first turn was
        await client.ask("how are you", session_id="m2", user_id="u", tenant_id="t")
        assert model.calls == 4

        # a cacheable tool's answer is cached (2 model calls: tool call + final answer) ...
        ro = {"user_id": "u", "tenant_id": "t", "allowed_tools": ["cached.calculator"]}
        a = await client.ask("add 2 and 3", session_id="c1", **ro)
        assert (a.content, model.calls) == ("The answer is 5.", 6)
        b = await client.ask("add 2 and 3", session_id="c2", **ro)
        assert (b.content, b.metadata.get("cached"), model.calls) == ("The answer is 5.", "true", 6)
        assert b.tool_calls == []  # nothing ran for the cached answer
        # ... for no longer than the tool's results may be reused (cache_ttl_s is 300)
        pattern = f"{settings.state.key_prefix}:adm:*:cache:*"
        ttls = [await redis.ttl(key) async for key in redis.scan_iter(match=pattern)]
        assert len(ttls) == 3  # the first turns of m1 and m2, and c1's answer
        assert sum(0 < ttl <= CACHED_TTL_S for ttl in ttls) == 1

        # a read-only tool without a cache TTL (the calculator, by default) is not stable enough:
        # its answer is not cached
        rn = {"user_id": "u", "tenant_id": "t", "allowed_tools": ["calculator"]}
        e = await client.ask("add 2 and 3", session_id="c5", **rn)
        f = await client.ask("add 2 and 3", session_id="c6", **rn)
        assert (e.content, f.content) == ("The answer is 5.", "The answer is 5.")
        assert "cached" not in f.metadata
        assert model.calls == 10

        # a side-effecting tool's answer is never cached
        se = {"user_id": "u", "tenant_id": "t", "allowed_tools": ["shop.calculator"]}
        c = await client.ask("add 2 and 3", session_id="c3", **se)
        assert (c.content, model.calls) == ("The answer is 5.", 12)
        d = await client.ask("add 2 and 3", session_id="c4", **se)
        assert "cached" not in d.metadata
        assert model.calls == 14


async def test_cache_can_be_switched_off(settings_factory: Any) -> None:
    settings: Settings = settings_factory(kafka=FAST_KAFKA, admission={"cache_enabled": False})
    await ensure_topics(settings)
    model = LocalRuleModel()
    async with PipelineWorker(settings, llm=model) as _, AgentClient(settings) as client:
        for session in ("a", "b"):
            answer = await client.ask("hi", session_id=session, user_id="u", tenant_id="t")
            assert "cached" not in answer.metadata
    assert model.calls == 2
