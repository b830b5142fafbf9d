"""Sliding-window limits on real Redis with explicit clocks: exact counts and retry-afters."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import pytest

from agentstream.admission.budget import BudgetCheck
from agentstream.admission.keys import AdmissionKeys
from agentstream.admission.limits import Window
from agentstream.admission.rate_limit import Settlement, SlidingWindowLimiter
from tests.support.redis import RedisClient, connect

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000  # ms; any fixed instant works: the scripts take the clock from the caller
MINUTE_MS = 60_000


def window(keys: AdmissionKeys, user: str, limit: int = 10, tenant: str = "t") -> Window:
    return Window(
        name="user_requests",
        key=keys.user_requests(tenant, user),
        limit=limit,
        window_ms=MINUTE_MS,
    )


async def test_eleventh_request_in_a_minute_is_refused_with_exact_retry_after(
    redis: RedisClient, unique_prefix: str
) -> None:
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    alice = window(keys, "alice")
    for i in range(10):  # one a second
        verdict = await limiter.acquire([(alice, 1)], f"r{i}", now_ms=T0 + i * 1000)
        assert verdict.allowed, i
    eleventh = await limiter.acquire([(alice, 1)], "r10", now_ms=T0 + 10_000)
    assert not eleventh.allowed
    assert eleventh.window == alice
    assert eleventh.retry_after_s == 50.0  # the first request leaves the window at T0 + 60 s
    # another user is unaffected
    bob = window(keys, "bob")
    assert (await limiter.acquire([(bob, 1)], "b0", now_ms=T0 + 10_000)).allowed
    # still refused 1 ms before the retry-after, admitted at it
    almost = await limiter.acquire([(alice, 1)], "r10", now_ms=T0 + 59_999)
    assert not almost.allowed
    assert almost.retry_after_s == 0.001
    assert (await limiter.acquire([(alice, 1)], "r10", now_ms=T0 + 60_000)).allowed
    # ... and then the next slot opens when the second request leaves the window
    after = await limiter.acquire([(alice, 1)], "r11", now_ms=T0 + 60_000)
    assert not after.allowed
    assert after.retry_after_s == 1.0


async def test_no_double_burst_at_a_window_boundary(redis: RedisClient, unique_prefix: str) -> None:
    """A fixed window would admit 10 at 0:59 and 10 more at 1:00; a sliding window does not."""
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    w = window(keys, "u")
    late = T0 + 59_000
    assert all([(await limiter.acquire([(w, 1)], f"a{i}", now_ms=late)).allowed for i in range(10)])
    verdict = await limiter.acquire([(w, 1)], "b0", now_ms=T0 + 61_000)
    assert not verdict.allowed
    assert verdict.retry_after_s == 58.0


async def test_same_member_is_charged_once(redis: RedisClient, unique_prefix: str) -> None:
    """A redelivered request (same request_id) does not use a second slot."""
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    w = window(keys, "u", limit=2)
    for _ in range(5):
        assert (await limiter.acquire([(w, 1)], "same", now_ms=T0)).allowed
    assert (await limiter.acquire([(w, 1)], "other", now_ms=T0)).allowed
    assert not (await limiter.acquire([(w, 1)], "third", now_ms=T0)).allowed


async def test_user_and_tenant_windows_are_all_or_nothing(
    redis: RedisClient, unique_prefix: str
) -> None:
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    tenant = Window(name="tenant_requests", key=keys.tenant_requests("t"), limit=3, window_ms=1000)
    users = {u: window(keys, u, limit=2) for u in ("a", "b")}
    got = [
        (await limiter.acquire([(users[u], 1), (tenant, 1)], f"{u}{i}", now_ms=T0)).allowed
        for u, i in [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    ]
    # a's third is refused by a's own limit (and must not use a tenant slot); b gets one more
    assert got == [True, True, False, True, False]
    refused = await limiter.acquire([(users["b"], 1), (tenant, 1)], "b9", now_ms=T0)
    assert refused.window == tenant


async def test_token_reconciliation_keeps_window_within_limit_plus_one_request(
    redis: RedisClient, unique_prefix: str
) -> None:
    """Estimates before, actual usage after (up to twice the estimate): in every window the
    booked total stays within the limit plus one request, and equals the actual usage."""
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    limit = 1000
    w = Window(name="user_tokens", key=keys.user_tokens("t", "u"), limit=limit, window_ms=10_000)
    day = keys.day("t", "20270115")
    rng = random.Random(3)
    admitted: list[tuple[int, int]] = []  # (time ms, actual tokens)
    biggest = 0
    for i in range(400):
        now = T0 + i * 100
        estimate = rng.randint(20, 150)
        verdict = await limiter.acquire([(w, estimate)], f"c{i}", now_ms=now)
        if not verdict.allowed:
            assert verdict.retry_after_s > 0
            continue
        actual = rng.randint(estimate // 2, estimate * 2)
        biggest = max(biggest, actual)
        await limiter.settle([(w, actual)], f"c{i}", day_key=day, tokens=actual, cost_micro=0)
        admitted.append((now, actual))
        in_window = sum(a for t, a in admitted if t > now - 10_000)
        assert in_window <= limit + biggest
        total = int(await redis.hget(w.costs_key, "#total") or 0)
        assert total == in_window  # the window holds actual usage, not estimates
    assert len(admitted) < 400  # the limit did bite
    assert int(await redis.hget(day, "tokens") or 0) == sum(a for _, a in admitted)


async def test_a_call_bigger_than_the_limit_runs_only_in_an_empty_window(
    redis: RedisClient, unique_prefix: str
) -> None:
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    w = Window(name="user_tokens", key=keys.user_tokens("t", "u"), limit=100, window_ms=1000)
    assert (await limiter.acquire([(w, 10)], "small", now_ms=T0)).allowed
    big = await limiter.acquire([(w, 500)], "big", now_ms=T0 + 10)
    assert not big.allowed
    assert big.retry_after_s == 0.99
    assert (await limiter.acquire([(w, 500)], "big", now_ms=T0 + 1000)).allowed


async def test_budget_reservation_and_settlement(redis: RedisClient, unique_prefix: str) -> None:
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    day = keys.day("t", "20270115")

    def budget(add: int) -> BudgetCheck:
        return BudgetCheck(key=day, add_tokens=add, token_limit=100, cost_limit_micro=50_000)

    assert (await limiter.acquire([], "c1", [budget(60)], now_ms=T0)).allowed
    assert int(await redis.hget(day, "tokens") or 0) == 60  # reserved
    # a second call whose estimate would cross the budget is refused
    refused = await limiter.acquire([], "c2", [budget(50)], now_ms=T0)
    assert (refused.allowed, refused.budget) == (False, "tokens")
    # re-reserving the same call replaces its reservation
    assert (await limiter.acquire([], "c1", [budget(70)], now_ms=T0)).allowed
    assert int(await redis.hget(day, "tokens") or 0) == 70
    await limiter.settle([], "c1", day_key=day, tokens=40, cost_micro=60_000)
    assert int(await redis.hget(day, "tokens") or 0) == 40
    # the cost budget (0.05 USD) is now used up: nothing more runs today
    spent = await limiter.acquire([], "c3", [budget(0)], now_ms=T0)
    assert (spent.allowed, spent.budget) == (False, "cost")


async def test_two_connections_never_double_allow(redis_url: str, unique_prefix: str) -> None:
    keys = AdmissionKeys(unique_prefix)
    clients = [connect(redis_url), connect(redis_url)]
    limiters = [SlidingWindowLimiter(c) for c in clients]
    w = window(keys, "u")
    verdicts = await asyncio.gather(
        *(limiters[i % 2].acquire([(w, 1)], f"r{i}") for i in range(100))
    )
    assert sum(v.allowed for v in verdicts) == 10
    for c in clients:
        await c.aclose()


_PROCESS_SCRIPT = """
import asyncio, sys
from agentstream.state.redis import redis_from_url
from agentstream.admission.keys import AdmissionKeys
from agentstream.admission.limits import Window
from agentstream.admission.rate_limit import Settlement, SlidingWindowLimiter

async def main(url, prefix, tag):
    redis = redis_from_url(url)
    keys = AdmissionKeys(prefix)
    w = Window(name="user_requests", key=keys.user_requests("t", "u"), limit=10, window_ms=60000)
    limiter = SlidingWindowLimiter(redis)
    verdicts = await asyncio.gather(*(limiter.acquire([(w, 1)], f"{tag}{i}") for i in range(50)))
    print(sum(v.allowed for v in verdicts))
    await redis.aclose()

asyncio.run(main(*sys.argv[1:]))
"""


def test_two_processes_never_double_allow(redis_url: str, unique_prefix: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS_SCRIPT, redis_url, unique_prefix, tag],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for tag in ("a", "b")
    ]
    allowed = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
        allowed.append(int(out))
    assert sum(allowed) == 10


async def test_a_batch_of_settlements_on_shared_keys_books_each_call(
    redis: RedisClient, unique_prefix: str
) -> None:
    """Calls of one tenant settled in one script share their window and day keys (each key is
    trimmed and given its TTL once per batch): every call is booked, reserved or not."""
    keys = AdmissionKeys(unique_prefix)
    limiter = SlidingWindowLimiter(redis)
    w = Window(name="user_tokens", key=keys.user_tokens("t", "u"), limit=10_000, window_ms=10_000)
    day = keys.day("t", "20270115")
    budget = BudgetCheck(key=day, add_tokens=50, token_limit=100_000, cost_limit_micro=-1)
    assert (await limiter.acquire([(w, 70)], "old", now_ms=T0)).allowed  # leaves the window
    for member in ("c1", "c2"):  # reserved before the call; c3 and c4 were not
        assert (await limiter.acquire([(w, 50)], member, [budget], now_ms=T0 + 9_000)).allowed
    assert int(await redis.hget(w.costs_key, "#total") or 0) == 170
    calls = [("c1", 40), ("c2", 80), ("c3", 25), ("c4", 0)]
    entries = [
        Settlement(charges=((w, n),), member=m, day_keys=(day,), tokens=n, cost_micro=0)
        for m, n in calls
    ]
    totals = await limiter.settle_many(entries, now_ms=T0 + 10_500)
    assert totals == [90, 120, 145, 145]  # day tokens after each call (c2 still reserved)
    assert int(await redis.hget(w.costs_key, "#total") or 0) == 145  # "old" left the window
    assert await redis.hget(w.costs_key, "old") is None
    assert [k for k in await redis.hkeys(day) if k.startswith(b"r:")] == []
    assert 0 < await redis.pttl(w.key) <= 10_000
    assert 0 < await redis.pttl(w.costs_key) <= 10_000
    assert await redis.ttl(day) > 0
