"""The retry policy: full jitter, attempt and time caps, Retry-After, per-attempt timeout and the
request deadline. A fake clock advances only when the policy sleeps, so delays are exact."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from agentstream.exceptions import AgentStreamError, ConfigError
from agentstream.llm.exceptions import (
    LLMBadRequestError,
    LLMRateLimitedError,
    LLMServerError,
)
from agentstream.resilience.deadline import current_deadline, deadline_scope
from agentstream.resilience.exceptions import (
    AttemptTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
)
from agentstream.resilience.retry import RetryPolicy, retry_call


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """Fails with the given errors in order, then answers ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def run(fn: Flaky, policy: RetryPolicy, clock: FakeClock, **kw: object) -> str:
    return await retry_call(
        fn,
        policy,
        sleep=clock.sleep,
        clock=clock,
        rng=random.Random(1),
        **kw,  # type: ignore[arg-type]
    )


async def test_retries_retriable_errors_until_success() -> None:
    clock = FakeClock()
    fn = Flaky(LLMServerError("5xx"), LLMServerError("5xx"))
    assert await run(fn, RetryPolicy(max_attempts=3, base_delay_s=1.0), clock) == "ok"
    assert fn.calls == 3
    assert len(clock.sleeps) == 2


def test_full_jitter_bounds_and_spread() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    assert [policy.backoff_cap_s(n) for n in (1, 2, 3, 4, 5, 10)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    rng = random.Random(42)
    draws = [policy.backoff_s(3, rng) for _ in range(2000)]
    assert all(0.0 <= d <= 2.0 for d in draws)
    # full jitter: uniform over the whole range, not clustered near the cap
    assert min(draws) < 0.1
    assert max(draws) > 1.9
    assert 0.9 < sum(draws) / len(draws) < 1.1


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    clock = FakeClock()
    fn = Flaky(*(LLMServerError(f"e{i}") for i in range(5)))
    with pytest.raises(LLMServerError, match="e2") as caught:
        await run(fn, RetryPolicy(max_attempts=3), clock)
    assert fn.calls == 3
    assert any("gave up after 3" in note for note in caught.value.__notes__)


async def test_non_retriable_and_foreign_errors_are_not_retried() -> None:
    clock = FakeClock()
    fn = Flaky(LLMBadRequestError("bad"))
    with pytest.raises(LLMBadRequestError):
        await run(fn, RetryPolicy(max_attempts=5), clock)
    assert fn.calls == 1
    fn = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        await run(fn, RetryPolicy(max_attempts=5), clock)
    assert fn.calls == 1
    assert clock.sleeps == []


async def test_retry_after_is_a_floor_for_the_wait() -> None:
    clock = FakeClock()
    fn = Flaky(LLMRateLimitedError("429", retry_after_s=2.0))
    assert await run(fn, RetryPolicy(base_delay_s=0.1, max_delay_s=0.2), clock) == "ok"
    assert clock.sleeps == [2.0]


async def test_total_time_cap_stops_before_sleeping_past_it() -> None:
    clock = FakeClock()
    fn = Flaky(LLMRateLimitedError("429", retry_after_s=30.0))
    with pytest.raises(LLMRateLimitedError) as caught:
        await run(fn, RetryPolicy(max_attempts=5, max_total_s=10.0), clock)
    assert clock.sleeps == []  # waiting 30 s would break the 10 s budget: give up at once
    assert any("budget" in note for note in caught.value.__notes__)


async def test_total_time_counts_time_spent_in_attempts() -> None:
    clock = FakeClock()

    async def slow_failure() -> str:
        clock.now += 4.0
        raise LLMServerError("5xx")

    with pytest.raises(LLMServerError):
        await retry_call(
            slow_failure,
            RetryPolicy(max_attempts=10, base_delay_s=0.0, max_total_s=10.0),
            sleep=clock.sleep,
            clock=clock,
        )
    assert clock.now - 1000.0 <= 12.0  # three attempts (12 s) at most, not ten


async def test_open_breaker_is_never_waited_for() -> None:
    clock = FakeClock()
    fn = Flaky(CircuitOpenError("llm:x", state="open", retry_after_s=0.5))
    with pytest.raises(CircuitOpenError) as caught:
        await run(fn, RetryPolicy(base_delay_s=0.0, max_total_s=60.0), clock)
    assert caught.value.retriable  # a retry topic may take it later
    assert fn.calls == 1
    assert clock.sleeps == []


async def test_deadline_passed_raises_timeout_code() -> None:
    clock = FakeClock()
    fn = Flaky()
    with pytest.raises(DeadlineExceededError) as caught:
        await run(fn, RetryPolicy(), clock, deadline=time.time() - 1)
    assert caught.value.code == "TIMEOUT"
    assert not caught.value.retriable
    assert fn.calls == 0


async def test_deadline_stops_retrying_when_the_wait_would_cross_it() -> None:
    clock = FakeClock()
    fn = Flaky(LLMRateLimitedError("429", retry_after_s=5.0))
    with pytest.raises(DeadlineExceededError) as caught:
        await run(fn, RetryPolicy(max_total_s=60.0), clock, deadline=time.time() + 3.0)
    assert isinstance(caught.value.__cause__, LLMRateLimitedError)
    assert fn.calls == 1
    assert clock.sleeps == []


async def test_deadline_scope_is_used_and_nests_to_the_earlier() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    with deadline_scope(soon):
        with deadline_scope(time.time() + 100):
            assert current_deadline() == pytest.approx(soon.timestamp())
        clock = FakeClock()
        fn = Flaky(LLMRateLimitedError("429", retry_after_s=5.0))
        with pytest.raises(DeadlineExceededError):
            await run(fn, RetryPolicy(), clock)
    assert current_deadline() is None


async def test_attempt_timeout_is_retriable_and_deadline_cut_is_not() -> None:
    calls = 0

    async def hang_then_answer() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(10)
        return "ok"

    policy = RetryPolicy(max_attempts=2, base_delay_s=0.0, attempt_timeout_s=0.05)
    assert await retry_call(hang_then_answer, policy) == "ok"
    assert calls == 2

    async def hang() -> str:
        await asyncio.sleep(10)
        return "never"

    with pytest.raises(AttemptTimeoutError):
        await retry_call(hang, RetryPolicy(max_attempts=1, attempt_timeout_s=0.05))
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await retry_call(
            hang, RetryPolicy(max_attempts=5, attempt_timeout_s=5.0), deadline=time.time() + 0.1
        )
    assert time.monotonic() - started < 2.0


async def test_inner_timeout_error_is_not_mistaken_for_ours() -> None:
    async def own_timeout() -> str:
        raise TimeoutError("from inside")

    with pytest.raises(TimeoutError, match="from inside"):
        await retry_call(own_timeout, RetryPolicy(max_attempts=3, attempt_timeout_s=5.0))


def test_policy_validation() -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError):
        RetryPolicy(attempt_timeout_s=0)
    assert issubclass(DeadlineExceededError, AgentStreamError)
