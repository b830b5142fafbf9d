"""What an admission check answers: nothing (admitted) or a :class:`Denial`."""

from __future__ import annotations

import math
from dataclasses import dataclass

from agentstream.admission.budget import BudgetCheck, seconds_until_next_day
from agentstream.admission.limits import AGENT_WINDOW_PREFIX, Window
from agentstream.exceptions import ErrorCode

RATE_LIMITED = ErrorCode.RATE_LIMITED
BUDGET_EXCEEDED = ErrorCode.BUDGET_EXCEEDED

UNAVAILABLE_RETRY_AFTER_S = 5.0
"""Retry-after of a request refused because Redis could not be asked (fail closed)."""

_UNAVAILABLE_MESSAGE = (
    "Usage limits cannot be checked right now, so the request was not run. "
    "Please try again in a few seconds."
)


@dataclass(frozen=True, kw_only=True)
class Denial:
    """Why a request (or an LLM call) was not admitted, in words the user can act on.

    ``limit`` names the limit that was hit (``user_requests``, ``tenant_tokens``,
    ``daily_cost_usd``, ``unavailable``, ...); ``retry_after_s`` is when trying again can succeed.
    """

    code: str
    message: str
    limit: str
    retry_after_s: float
    retriable: bool = True

    @property
    def metadata(self) -> dict[str, str]:
        """Response metadata: ``retry_after_s`` (seconds, millisecond precision) and the limit."""
        return {"retry_after_s": f"{self.retry_after_s:.3f}", "limit": self.limit}


def _per(window_ms: int) -> str:
    seconds = window_ms / 1000
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds == size:
            return name
    return f"{seconds:g} seconds"


_WHAT = {
    "user_requests": ("requests", "for this user"),
    "tenant_requests": ("requests", "for this organisation"),
    "user_tokens": ("model tokens", "for this user"),
    "tenant_tokens": ("model tokens", "for this organisation"),
}


def rate_denial(window: Window, retry_after_s: float) -> Denial:
    agent_window = window.name.startswith(AGENT_WINDOW_PREFIX)
    unit, whom = _WHAT.get(window.name.removeprefix(AGENT_WINDOW_PREFIX), ("units", ""))
    if agent_window:
        whom = f"{whom} with this agent".strip()
    text = (
        f"Rate limit reached: at most {window.limit} {unit} per {_per(window.window_ms)} "
        f"{whom}. Please try again in {max(1, math.ceil(retry_after_s))} seconds."
    )
    return Denial(code=RATE_LIMITED, message=text, limit=window.name, retry_after_s=retry_after_s)


def budget_denial(kind: str | None, budget: BudgetCheck, now_s: float, check: str) -> Denial:
    """``budget`` said no: the tenant's (``limit`` ``daily_tokens``/``daily_cost_usd``) or an
    agent's own (``agent:daily_tokens``/``agent:daily_cost_usd``)."""
    resets = seconds_until_next_day(now_s)
    if kind == "cost":
        what = f"daily cost budget of {budget.cost_limit_usd:g} USD"
        limit = "daily_cost_usd"
    else:
        what = f"daily budget of {budget.token_limit} model tokens"
        limit = "daily_tokens"
    whose = "This organisation's"
    if budget.agent is not None:
        whose = "This agent's"
        what += " for this organisation"
        limit = AGENT_WINDOW_PREFIX + limit
    verb = "would be exceeded by this request" if check == "tokens" else "is used up"
    text = (
        f"{whose} {what} {verb}. It resets at 00:00 UTC (in {max(1, round(resets / 60))} minutes)."
    )
    return Denial(
        code=BUDGET_EXCEEDED, message=text, limit=limit, retry_after_s=resets, retriable=False
    )


def store_denial(code: str) -> Denial:
    return Denial(
        code=code,
        message=_UNAVAILABLE_MESSAGE,
        limit="unavailable",
        retry_after_s=UNAVAILABLE_RETRY_AFTER_S,
        retriable=True,
    )
