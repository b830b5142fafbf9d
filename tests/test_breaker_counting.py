"""Issue 14, defect 3: the shared LLM breaker counts the provider's health, not one user's luck.

End to end on the real broker + Redis with a local OpenAI-compatible server and an in-process
worker whose route is one provider behind the Redis-shared breaker:

- a model that answers one user with tool arguments that are not a JSON object, more often than
  the breaker's threshold, gets that user ERROR answers (``LLM_INVALID_RESPONSE``, after one
  repair turn each) and leaves the breaker closed: another user's ordinary request is answered;
- a hanging provider (per-call timeout) opens the breaker, and the next request's dead letter
  and ErrorEvent say ``CIRCUIT_OPEN`` *and* the cause that opened it, ``LLM_TIMEOUT``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agentstream.client import AgentClient, new_request
from agentstream.config import Settings
from agentstream.resilience.breaker import CircuitBreaker
from agentstream.schemas import dead_letter as dl
from agentstream.schemas.codec import AvroCodec
from agentstream.streams.admin import ensure_topics
from agentstream.streams.app import PipelineWorker
from tests.support.kafka import FAST_KAFKA, TopicReader
from tests.support.llm_servers import Arrival, FakeLLMServer, Reply, openai_completion
from tests.support.redis import connect
from tests.support.wait import wait_until

pytestmark = pytest.mark.integration

PROVIDER = "p"
THRESHOLD = 2
MALFORMED = "[malformed]"
NOT_AN_OBJECT = '["not", "an", "object"]'


def llm_config(server: FakeLLMServer, *, timeout_s: float, max_attempts: int) -> dict[str, Any]:
    return {
        "model": PROVIDER,
        "providers": {
            PROVIDER: {
                "kind": "openai",
                "model": "m",
                "base_url": server.base_url,
                "api_key": "sk-test",
                "timeout_s": timeout_s,
            }
        },
        "retry": {"max_attempts": max_attempts, "base_delay_s": 0.01, "max_delay_s": 0.02},
        "breaker": {"failure_threshold": THRESHOLD, "recovery_timeout_s": 60},
    }


def last_user(arrival: Arrival) -> str:
    return str([m for m in arrival.body["messages"] if m["role"] == "user"][-1]["content"])


def model(arrival: Arrival) -> Reply:
    """Tool arguments that are not a JSON object for messages marked MALFORMED, else an answer."""
    first_user = next(m for m in arrival.body["messages"] if m["role"] == "user")["content"]
    if MALFORMED in first_user:
        call = ("call-1", "calculator", NOT_AN_OBJECT)
        return Reply(body=openai_completion(None, tool_calls=[call]))
    return Reply(body=openai_completion(f"provider says: {last_user(arrival)}"))


async def test_malformed_tool_arguments_of_one_user_do_not_open_the_breaker_for_others(
    settings_factory: Callable[..., Settings],
) -> None:
    codec = AvroCodec()
    async with FakeLLMServer() as server:
        server.responder = model
        settings = settings_factory(
            kafka=FAST_KAFKA,
            topics={"retry_tiers_s": [0.5]},
            llm=llm_config(server, timeout_s=5.0, max_attempts=3),
        )
        await ensure_topics(settings)
        topics = settings.topics
        redis = connect(settings.redis_url or "")
        breaker = CircuitBreaker(redis, f"llm:{PROVIDER}", namespace=settings.state.key_prefix)
        try:
            async with (
                PipelineWorker(settings),
                AgentClient(settings) as client,
                TopicReader(settings, topics.responses, codec, "AgentResponse") as responses,
                TopicReader(settings, topics.errors, codec, "ErrorEvent") as errors,
                TopicReader(settings, topics.dlq(topics.generation)) as dead,
            ):

                def outcome(request_id: str) -> bool:
                    return any(r["request_id"] == request_id for r in responses.values) or any(
                        e["request_id"] == request_id for e in errors.values
                    )

                # one user, more malformed answers than the breaker's threshold
                bad: list[str] = []
                for i in range(THRESHOLD + 2):
                    request = new_request(
                        f"{MALFORMED} compute something {i}",
                        session_id=f"mallory-{i}",
                        user_id="mallory",
                        tenant_id="t",
                    )
                    bad.append(await client.submit(request))
                    await wait_until(
                        lambda rid=bad[-1]: outcome(rid),  # type: ignore[misc]
                        f"an outcome for {i}",
                        deadline_s=20,
                    )
                calls_for_bad = len(server.arrivals)

                # another user's ordinary request on the same route
                good = new_request(
                    "hello there", session_id="alice-1", user_id="alice", tenant_id="t"
                )
                good_id = await client.submit(good)
                await wait_until(
                    lambda: outcome(good_id), "an outcome for the ordinary request", deadline_s=20
                )

                snapshot = await breaker.snapshot()
                answers = {r["request_id"]: r for r in responses.values}
                events = [e for e in errors.values if e["request_id"] == good_id]
                assert not events, events
                assert answers[good_id]["state"] == "COMPLETED"
                assert answers[good_id]["content"] == "provider says: hello there"
                assert snapshot.state == "closed"
                assert snapshot.failures == 0

                # the malformed answers were each that request's error, after one repair turn
                for request_id in bad:
                    answer = answers[request_id]
                    assert answer["state"] == "ERROR"
                    assert answer["error_code"] == "LLM_INVALID_RESPONSE"
                bad_events = [e for e in errors.values if e["request_id"] in bad]
                assert {e["code"] for e in bad_events} == {"LLM_INVALID_RESPONSE"}
                assert not any(e["retriable"] for e in bad_events)
                assert calls_for_bad == 2 * len(bad)  # the call and one repair, no retries
                repairs = server.arrivals[1:calls_for_bad:2]
                for arrival in repairs:
                    note = arrival.body["messages"][-1]
                    assert note["role"] == "user"
                    assert "JSON object" in note["content"]
                    assert NOT_AN_OBJECT not in note["content"]
                assert not dead.records
        finally:
            await redis.aclose()


async def test_open_breaker_dead_letter_and_error_event_name_the_cause(
    settings_factory: Callable[..., Settings],
) -> None:
    codec = AvroCodec()
    async with FakeLLMServer() as server:
        server.default = Reply(delay_s=3.0, body=openai_completion("too late"))
        settings = settings_factory(
            kafka=FAST_KAFKA,
            topics={"retry_tiers_s": []},
            llm=llm_config(server, timeout_s=0.3, max_attempts=1),
        )
        await ensure_topics(settings)
        topics = settings.topics
        redis = connect(settings.redis_url or "")
        breaker = CircuitBreaker(redis, f"llm:{PROVIDER}", namespace=settings.state.key_prefix)
        try:
            async with (
                PipelineWorker(settings),
                AgentClient(settings) as client,
                TopicReader(settings, topics.errors, codec, "ErrorEvent") as errors,
                TopicReader(settings, topics.dlq(topics.generation)) as dead,
            ):

                def dead_letters(request_id: str) -> list[dict[str, str]]:
                    return [
                        dl.header_map(list(r.headers))
                        for r in dead.records
                        if codec.decode("GenerationTurn", r.value)["request_id"] == request_id
                    ]

                # the provider hangs: the call and its simplified-context retry time out
                first = await client.submit(
                    new_request("hello", session_id="s1", user_id="u1", tenant_id="t")
                )
                await wait_until(
                    lambda: bool(dead_letters(first)), "the first dead letter", deadline_s=20
                )
                assert (await breaker.snapshot()).state == "open"
                assert dead_letters(first)[0][dl.ERROR_CODE] == "LLM_TIMEOUT"
                calls = len(server.arrivals)

                # the next request fails fast on the open breaker
                second = await client.submit(
                    new_request("hello again", session_id="s2", user_id="u2", tenant_id="t")
                )
                await wait_until(
                    lambda: bool(dead_letters(second)), "the second dead letter", deadline_s=20
                )
                await wait_until(
                    lambda: any(e["request_id"] == second for e in errors.values),
                    "the second ErrorEvent",
                    deadline_s=20,
                )
                assert len(server.arrivals) == calls  # no call reached the provider
                headers = dead_letters(second)[0]
                assert headers[dl.ERROR_CODE] == "CIRCUIT_OPEN"
                assert headers[dl.ERROR_CAUSE] == "LLM_TIMEOUT"
                event = next(e for e in errors.values if e["request_id"] == second)
                assert event["code"] == "CIRCUIT_OPEN"
                assert event["cause"] == "LLM_TIMEOUT"
                assert event["retriable"]
        finally:
            await redis.aclose()
