"""What a tenant has used today and in the current window, and what remains."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from agentstream.admission.budget import MICRO, seconds_until_next_day, utc_day
from agentstream.admission.keys import COSTS_SUFFIX, AdmissionKeys
from agentstream.admission.limits import merged_limits
from agentstream.config import AdmissionLimits, AdmissionSettings
from agentstream.state.redis import RedisClient


@dataclass(frozen=True, kw_only=True)
class TenantUsage:
    tenant_id: str
    day: str
    tokens: int
    cost_usd: float
    daily_tokens: int | None
    daily_cost_usd: float | None
    resets_in_s: float
    window_s: float
    window_requests: int
    window_tokens: int
    tenant_requests: int | None
    tenant_tokens: int | None

    @property
    def tokens_remaining(self) -> int | None:
        return None if self.daily_tokens is None else max(0, self.daily_tokens - self.tokens)

    @property
    def cost_remaining_usd(self) -> float | None:
        if self.daily_cost_usd is None:
            return None
        return max(0.0, self.daily_cost_usd - self.cost_usd)

    @property
    def window_requests_remaining(self) -> int | None:
        if self.tenant_requests is None:
            return None
        return max(0, self.tenant_requests - self.window_requests)

    @property
    def window_tokens_remaining(self) -> int | None:
        if self.tenant_tokens is None:
            return None
        return max(0, self.tenant_tokens - self.window_tokens)


async def read_usage(
    redis: RedisClient, keys: AdmissionKeys, tenant_id: str, limits: AdmissionLimits
) -> TenantUsage:
    seconds, micros = await redis.time()
    now_s = seconds + micros / 1_000_000
    day = utc_day(now_s)
    tokens, cost_micro = await redis.hmget(keys.day(tenant_id, day), ["tokens", "cost_micro"])
    since = int(now_s * 1000) - round(limits.window_s * 1000)
    return TenantUsage(
        tenant_id=tenant_id,
        day=day,
        tokens=int(tokens or 0),
        cost_usd=int(cost_micro or 0) / MICRO,
        daily_tokens=limits.daily_tokens,
        daily_cost_usd=limits.daily_cost_usd,
        resets_in_s=seconds_until_next_day(now_s),
        window_s=limits.window_s,
        window_requests=await _window_total(redis, keys.tenant_requests(tenant_id), since),
        window_tokens=await _window_total(redis, keys.tenant_tokens(tenant_id), since),
        tenant_requests=limits.tenant_requests,
        tenant_tokens=limits.tenant_tokens,
    )


async def tenants_with_usage(
    redis: RedisClient, keys: AdmissionKeys, configured: Iterable[str] = ()
) -> list[str]:
    """Tenants that used tokens today (a usage hash exists), plus ``configured`` ones."""
    seconds, _ = await redis.time()
    found = set(configured)
    async for key in redis.scan_iter(match=keys.day_pattern(utc_day(seconds)), count=1000):
        tenant = keys.tenant_of_day_key(key.decode() if isinstance(key, bytes) else key)
        if tenant:
            found.add(tenant)
    return sorted(found)


async def _window_total(redis: RedisClient, key: str, since_ms: int) -> int:
    """The sum of the costs of entries newer than ``since_ms`` (read-only: nothing is trimmed)."""
    members = cast(list[bytes], await redis.zrangebyscore(key, f"({since_ms}", "+inf"))
    if not members:
        return 0
    costs = await redis.hmget(key + COSTS_SUFFIX, members)
    return sum(int(c) for c in costs if c is not None)


async def budget_used_ratios(
    redis: RedisClient, keys: AdmissionKeys, settings: AdmissionSettings
) -> dict[str, float]:
    """The highest share of its daily token and cost budget any tenant has used today
    (``{"tokens": 0.42, "cost": 0.9}``; a kind no tenant has a budget for is left out)."""
    highest: dict[str, float] = {}
    for tenant in await tenants_with_usage(redis, keys, settings.tenants):
        usage = await read_usage(redis, keys, tenant, merged_limits(settings, tenant))
        for kind, used, limit in (
            ("tokens", usage.tokens, usage.daily_tokens),
            ("cost", usage.cost_usd, usage.daily_cost_usd),
        ):
            if limit is not None:
                ratio = used / limit if limit > 0 else 1.0
                highest[kind] = max(highest.get(kind, 0.0), ratio)
    return highest
