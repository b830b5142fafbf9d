"""Daily budgets: the UTC day a usage belongs to, when it resets, and money as integers.

Usage is kept per tenant and UTC day in one hash (``tokens``, ``cost_micro``: USD millionths,
so Redis can add it exactly). Tokens are reserved before an LLM call and corrected after it;
cost is only known after the call, so the cost budget is checked against the spend so far and the
call that crosses it may overshoot by its own cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DAY_TTL_S = 3 * 24 * 3600
"""Usage hashes outlive their day a little, so yesterday's figures stay readable."""

MICRO = 1_000_000


def utc_day(now_s: float) -> str:
    return datetime.fromtimestamp(now_s, UTC).strftime("%Y%m%d")


def seconds_until_next_day(now_s: float) -> float:
    now = datetime.fromtimestamp(now_s, UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


@dataclass(frozen=True, kw_only=True)
class BudgetCheck:
    """The budget part of one ACQUIRE call: add ``add_tokens`` unless a limit would be crossed."""

    key: str
    add_tokens: int
    token_limit: int | None
    cost_limit_micro: int | None
    ttl_s: int = DAY_TTL_S
