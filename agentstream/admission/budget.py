"""Daily budgets: the UTC day a usage belongs to, when it resets, and money as integers.

Usage is kept per tenant and UTC day in one hash (``tokens``, ``cost_micro``: USD millionths,
so Redis can add it exactly), and per agent within the tenant in another when the agent has a
daily budget of its own. Tokens are reserved before an LLM call and corrected after it;
cost is only known after the call, so the cost budget is checked against the spend so far and the
call that crosses it may overshoot by its own cost.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agentstream.config import AdmissionLimits

DAY_TTL_S = 3 * 24 * 3600
"""Usage hashes outlive their day a little, so yesterday's figures stay readable."""

MICRO = 1_000_000


def utc_day(now_s: float) -> str:
    """The UTC day of ``now_s`` as YYYYMMDD (asked for every model call: cached per day)."""
    return _day_of(int(now_s // 86400))


@functools.lru_cache(maxsize=4)
def _day_of(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86400, UTC).strftime("%Y%m%d")


def seconds_until_next_day(now_s: float) -> float:
    now = datetime.fromtimestamp(now_s, UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


@dataclass(frozen=True, kw_only=True)
class BudgetCheck:
    """One budget of an ACQUIRE call: add ``add_tokens`` unless a limit would be crossed.
    ``agent``: the agent whose own budget this is (None: the tenant's)."""

    key: str
    add_tokens: int
    token_limit: int | None
    cost_limit_micro: int | None
    ttl_s: int = DAY_TTL_S
    agent: str | None = None

    @property
    def cost_limit_usd(self) -> float | None:
        return None if self.cost_limit_micro is None else self.cost_limit_micro / MICRO


def budget_check(
    limits: AdmissionLimits | None, key: str, add_tokens: int, *, agent: str | None = None
) -> BudgetCheck | None:
    """The check of ``limits``' daily budgets on the usage hash ``key`` (None: no budget)."""
    if limits is None or (limits.daily_tokens is None and limits.daily_cost_usd is None):
        return None
    cost = limits.daily_cost_usd
    return BudgetCheck(
        key=key,
        add_tokens=add_tokens,
        token_limit=limits.daily_tokens,
        cost_limit_micro=None if cost is None else to_micro(cost),
        agent=agent,
    )
