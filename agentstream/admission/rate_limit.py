"""Sliding-window limits in Redis, one atomic Lua call per check (see :mod:`.scripts`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from agentstream.admission.budget import DAY_TTL_S, BudgetCheck
from agentstream.admission.limits import Window
from agentstream.admission.scripts import ACQUIRE, SETTLE
from agentstream.state.redis import RedisClient

_ALLOWED, _WINDOW_FULL, _TOKEN_BUDGET, _COST_BUDGET = 0, 1, 2, 3


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """The answer of one ACQUIRE: allowed, or which window / budget said no and when to retry."""

    allowed: bool
    window: Window | None = None
    budget: Literal["tokens", "cost"] | None = None
    budget_check: BudgetCheck | None = None
    """The budget that said no (``budget`` says which of its limits)."""
    retry_after_s: float = 0.0
    now_ms: int = 0


class SlidingWindowLimiter:
    """``acquire`` charges a member's cost to several windows (and checks budgets) atomically;
    ``settle`` replaces a reserved cost with the actual one and books the day's usage."""

    def __init__(self, redis: RedisClient) -> None:
        self._acquire = redis.register_script(ACQUIRE)
        self._settle = redis.register_script(SETTLE)

    async def acquire(
        self,
        charges: Sequence[tuple[Window, int]],
        member: str,
        budgets: Sequence[BudgetCheck] = (),
        *,
        now_ms: int | None = None,
    ) -> Verdict:
        """Charge ``charges`` and reserve each budget's ``add_tokens``, all or nothing."""
        keys: list[str] = []
        args: list[str | int] = ["" if now_ms is None else now_ms, member, len(charges)]
        args.append(len(budgets))
        for b in budgets:
            args += [b.add_tokens, _limit(b.token_limit), _limit(b.cost_limit_micro), b.ttl_s]
        for window, cost in charges:
            keys += [window.key, window.costs_key]
            args += [cost, window.limit, window.window_ms]
        keys += [b.key for b in budgets]
        status, index, retry_ms, now = (int(v) for v in await self._acquire(keys=keys, args=args))
        if status == _ALLOWED:
            return Verdict(allowed=True, now_ms=now)
        if status == _WINDOW_FULL:
            return Verdict(
                allowed=False,
                window=charges[index - 1][0],
                retry_after_s=retry_ms / 1000,
                now_ms=now,
            )
        kind: Literal["tokens", "cost"] = "tokens" if status == _TOKEN_BUDGET else "cost"
        return Verdict(allowed=False, budget=kind, budget_check=budgets[index - 1], now_ms=now)

    async def settle(
        self,
        charges: Sequence[tuple[Window, int]],
        member: str,
        *,
        day_key: str,
        tokens: int,
        cost_micro: int,
        now_ms: int | None = None,
    ) -> int:
        """Book the actual usage of one call; returns the day's token total afterwards."""
        entry = Settlement(
            charges=tuple(charges),
            member=member,
            day_keys=(day_key,),
            tokens=tokens,
            cost_micro=cost_micro,
        )
        (total,) = await self.settle_many([entry], now_ms=now_ms)
        return total

    async def settle_many(
        self, entries: Sequence[Settlement], *, now_ms: int | None = None
    ) -> list[int]:
        """Book several calls' usage in one round trip (their keys must share a hash tag: one
        tenant's); returns each call's token total of its first day key afterwards."""
        keys: list[str] = []
        args: list[str | int] = ["" if now_ms is None else now_ms, DAY_TTL_S, len(entries)]
        for e in entries:
            args += [e.member, len(e.charges), len(e.day_keys), e.tokens, e.cost_micro]
            for window, cost in e.charges:
                keys += [window.key, window.costs_key]
                args += [cost, window.window_ms]
            keys += e.day_keys
        return [int(t) for t in await self._settle(keys=keys, args=args)]


@dataclass(frozen=True, kw_only=True)
class Settlement:
    """One call's actual usage, to book with :meth:`SlidingWindowLimiter.settle_many`.
    ``day_keys``: the day usage hashes it counts in, the tenant's first (then the agent's, when
    the agent has a daily budget)."""

    charges: tuple[tuple[Window, int], ...]
    member: str
    day_keys: tuple[str, ...]
    tokens: int
    cost_micro: int


def _limit(value: int | None) -> int:
    return -1 if value is None else value
