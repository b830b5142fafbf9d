"""Circuit breakers sharing their state through a real Redis: separate breaker instances (own
connections, own processes) act as separate workers. Waits are on conditions with deadlines."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from agentstream.exceptions import cause_code
from agentstream.llm.exceptions import (
    LLMAuthenticationError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMContentPolicyError,
    LLMInvalidResponseError,
    LLMOverloadedError,
    LLMQuotaExceededError,
    LLMRateLimitedError,
    LLMServerError,
    LLMTimeoutError,
)
from agentstream.resilience.breaker import BreakerConfig, CircuitBreaker, counts_as_failure
from agentstream.resilience.exceptions import (
    AttemptTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
)
from agentstream.state.exceptions import ConcurrentUpdateError
from agentstream.tools.exceptions import ToolTimeoutError, ToolUnavailableError
from tests.support.redis import RedisClient, connect

pytestmark = pytest.mark.integration

Workers = Callable[..., Awaitable[tuple[CircuitBreaker, CircuitBreaker]]]


@pytest.fixture
async def workers(redis_url: str, unique_prefix: str) -> AsyncIterator[Workers]:
    """``await workers(**config)`` → two breakers on one key, each with its own Redis client."""
    clients: list[RedisClient] = []

    async def make(**config: float) -> tuple[CircuitBreaker, CircuitBreaker]:
        cfg = BreakerConfig(**config)  # type: ignore[arg-type]
        pair = []
        for _ in range(2):
            client = connect(redis_url)
            clients.append(client)
            pair.append(CircuitBreaker(client, "llm:test", cfg, namespace=unique_prefix))
        return pair[0], pair[1]

    yield make
    for client in clients:
        await client.aclose()


async def eventually(
    check: Callable[[], Awaitable[bool]], deadline_s: float = 5.0, what: str = "condition"
) -> float:
    """Poll ``check`` until true; return the seconds it took. Fails after ``deadline_s``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def fail(breaker: CircuitBreaker) -> None:
    permit = await breaker.acquire()
    await breaker.record(permit, "failure")


async def allowed(breaker: CircuitBreaker) -> bool:
    try:
        permit = await breaker.acquire()
    except CircuitOpenError:
        return False
    await breaker.record(permit, "release")
    return True


async def test_failures_from_two_workers_open_it_for_both(workers: Workers) -> None:
    a, b = await workers(failure_threshold=4, recovery_timeout_s=30)
    await fail(a)
    await fail(b)
    await fail(a)
    assert (await b.snapshot()).state == "closed"
    assert (await b.snapshot()).failures == 3
    await fail(b)
    for worker in (a, b):
        with pytest.raises(CircuitOpenError) as caught:
            await worker.acquire()
        assert caught.value.state == "open"
        assert 29.0 < caught.value.retry_after_s <= 30.0
        assert caught.value.code == "CIRCUIT_OPEN"


async def test_a_success_resets_the_consecutive_count(workers: Workers) -> None:
    a, b = await workers(failure_threshold=3)
    await fail(a)
    await fail(b)
    permit = await a.acquire()
    await a.record(permit, "success")
    await fail(b)
    await fail(a)
    snap = await b.snapshot()
    assert (snap.state, snap.failures) == ("closed", 2)


async def test_open_then_half_open_after_recovery_then_closed_by_probes(workers: Workers) -> None:
    a, b = await workers(
        failure_threshold=2, recovery_timeout_s=0.3, half_open_max_probes=2, half_open_successes=2
    )
    await fail(a)
    await fail(b)
    opened = time.monotonic()
    assert not await allowed(a)

    async def probe_admitted() -> bool:
        try:
            probes.append(await a.acquire())
        except CircuitOpenError:
            return False
        return True

    probes = []
    await eventually(probe_admitted, what="half-open")
    assert time.monotonic() - opened >= 0.3 - 0.02  # Redis clock vs ours: allow a tick
    assert probes[0].state == "half_open"
    probes.append(await b.acquire())  # the second probe slot, from the other worker
    with pytest.raises(CircuitOpenError) as caught:  # no third probe while two are in flight
        await a.acquire()
    assert caught.value.state == "half_open"
    assert await a.record(probes[0], "success") == "half_open"  # one of two successes
    third = await b.acquire()  # the finished probe's slot is free again
    assert await b.record(probes[1], "success") == "closed"
    snap = await a.snapshot()
    assert (snap.state, snap.failures, snap.probes_in_flight) == ("closed", 0, 0)
    assert await b.record(third, "failure") == "closed"  # a stale probe cannot reopen it
    assert await allowed(a)
    assert await allowed(b)


async def test_a_failed_probe_opens_it_again(workers: Workers) -> None:
    a, b = await workers(failure_threshold=1, recovery_timeout_s=0.2)
    await fail(a)
    permit = None

    async def probe() -> bool:
        nonlocal permit
        try:
            permit = await b.acquire()
        except CircuitOpenError:
            return False
        return True

    await eventually(probe, what="half-open")
    assert permit is not None
    assert await b.record(permit, "failure") == "open"
    with pytest.raises(CircuitOpenError) as caught:
        await a.acquire()
    assert caught.value.state == "open"
    assert caught.value.retry_after_s > 0.1


async def test_outcomes_of_calls_started_before_a_transition_are_ignored(
    workers: Workers,
) -> None:
    a, b = await workers(failure_threshold=2, recovery_timeout_s=30)
    slow_call = await a.acquire()  # started while closed
    await fail(b)
    await fail(b)
    assert await a.record(slow_call, "success") == "open"  # does not close the open breaker
    assert (await a.snapshot()).state == "open"


async def test_a_lost_probe_is_forgotten_after_the_probe_timeout(workers: Workers) -> None:
    a, b = await workers(failure_threshold=1, recovery_timeout_s=0.1, probe_timeout_s=0.4)
    await fail(a)
    await eventually(lambda: _acquire_ok(a), what="first probe")  # ...whose worker then dies
    probe_started = time.monotonic()
    assert not await allowed(b)
    await eventually(lambda: allowed(b), what="the lost probe's slot to expire")
    assert time.monotonic() - probe_started >= 0.4 - 0.05


async def _acquire_ok(breaker: CircuitBreaker) -> bool:
    try:
        await breaker.acquire()
    except CircuitOpenError:
        return False
    return True


async def test_call_counts_provider_failures_only(workers: Workers) -> None:
    a, b = await workers(failure_threshold=2)

    async def bad_request() -> None:
        raise LLMBadRequestError("400")

    async def malformed() -> None:
        raise LLMInvalidResponseError("tool call arguments are not a JSON object")

    async def timeout() -> None:
        raise LLMTimeoutError("no answer")

    for call in (bad_request, malformed) * 3:
        with pytest.raises((LLMBadRequestError, LLMInvalidResponseError)):
            await a.call(call)
    assert (await a.snapshot()).failures == 0
    for _ in range(2):
        with pytest.raises(LLMTimeoutError):
            await a.call(timeout)
    snapshot = await b.snapshot()
    assert (snapshot.state, snapshot.last_failure) == ("open", "LLM_TIMEOUT")
    # the other worker's refusal names the failure that opened the breaker
    with pytest.raises(CircuitOpenError) as caught:
        await b.call(timeout)
    assert caught.value.code == "CIRCUIT_OPEN"
    assert caught.value.cause_code == "LLM_TIMEOUT"
    assert "LLM_TIMEOUT" in str(caught.value)
    assert cause_code(caught.value) == "LLM_TIMEOUT"


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (LLMTimeoutError("t"), True),
        (AttemptTimeoutError("t"), True),
        (LLMConnectionError("refused"), True),
        (LLMServerError("500"), True),
        (LLMOverloadedError("529"), True),
        (LLMRateLimitedError("429"), True),  # the API key's shared limit: back off everyone
        (ToolTimeoutError("t"), True),
        (ToolUnavailableError("gone"), True),
        (LLMInvalidResponseError("not a JSON object"), False),
        (LLMBadRequestError("400"), False),
        (LLMContentPolicyError("policy"), False),
        (LLMAuthenticationError("401"), False),
        (LLMQuotaExceededError("quota"), False),
        (DeadlineExceededError("late"), False),
        (CircuitOpenError("k", state="open", retry_after_s=1.0), False),
        (ConcurrentUpdateError("cas"), False),  # retriable, but says nothing about the provider
        (ValueError("not a project error"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_what_the_breaker_counts(error: Exception, counted: bool) -> None:
    assert counts_as_failure(error) is counted


async def test_cancelled_probe_gives_its_slot_back(workers: Workers) -> None:
    a, b = await workers(failure_threshold=1, recovery_timeout_s=0.1, probe_timeout_s=30)
    await fail(a)
    await eventually(lambda: allowed(b), what="half-open")  # acquires and releases a probe
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.sleep(30)

    task = asyncio.create_task(a.call(hang))
    await asyncio.wait_for(entered.wait(), 5)
    snap = await b.snapshot()
    assert (snap.state, snap.probes_in_flight) == ("half_open", 1)
    assert not await allowed(b)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await b.snapshot()).probes_in_flight == 0
    assert await allowed(b)


async def test_unreachable_redis_lets_calls_through(unique_prefix: str) -> None:
    client = aioredis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    breaker = CircuitBreaker(
        client, "llm:x", BreakerConfig(failure_threshold=1), namespace=unique_prefix
    )
    try:

        async def answer() -> str:
            return "ok"

        async def boom() -> str:
            raise LLMServerError("500")

        for _ in range(3):
            with pytest.raises(LLMServerError):
                await breaker.call(boom)
        assert await breaker.call(answer) == "ok"
    finally:
        await client.aclose()


CHILD = """
import asyncio, sys
from agentstream.resilience.breaker import BreakerConfig, CircuitBreaker
from agentstream.state.redis import redis_from_url

async def main(url, namespace, action):
    client = redis_from_url(url)
    config = BreakerConfig(failure_threshold=3, recovery_timeout_s=30)
    breaker = CircuitBreaker(client, "llm:test", config, namespace=namespace)
    try:
        if action == "fail":
            for _ in range(3):
                permit = await breaker.acquire()
                await breaker.record(permit, "failure")
        print((await breaker.snapshot()).state)
    finally:
        await client.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def _child(redis_url: str, namespace: str, action: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, namespace, action],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


async def test_opened_in_another_process_is_open_here(
    workers: Workers, redis_url: str, unique_prefix: str
) -> None:
    a, _ = await workers(failure_threshold=3, recovery_timeout_s=30)
    assert await allowed(a)
    assert await asyncio.to_thread(_child, redis_url, unique_prefix, "fail") == "open"
    with pytest.raises(CircuitOpenError):
        await a.acquire()
    await a.reset()
    assert await asyncio.to_thread(_child, redis_url, unique_prefix, "show") == "closed"
