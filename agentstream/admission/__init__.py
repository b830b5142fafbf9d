"""Admission control and caching: rate limits, daily budgets and the response cache, in Redis.

* Rate limits: sliding windows per user and per tenant, for requests (checked at validation) and
  LLM tokens (reserved before each model call, settled to the actual usage after it). One atomic
  Lua call per check (:mod:`.scripts`). Over a limit -> RATE_LIMITED with ``retry_after_s``.
* Budgets: daily tokens and cost per tenant (UTC day). Exhausted -> BUDGET_EXCEEDED.
* Response cache (:mod:`.cache`): single-turn answers, tenant- and user-scoped.
* Redis down: rate limits fail open, budgets fail closed (configurable), both counted.

Settings: :class:`agentstream.config.AdmissionSettings` (``AGENTSTREAM_ADMISSION__*``), e.g.
``AGENTSTREAM_ADMISSION__DEFAULTS__USER_REQUESTS=10`` or per tenant
``AGENTSTREAM_ADMISSION__TENANTS='{"acme": {"daily_tokens": 1000000}}'``.
"""

from __future__ import annotations

from agentstream.admission.cache import CachedAnswer, ResponseCache
from agentstream.admission.controller import Admission, TokenGrant, admitted_llm_call
from agentstream.admission.decisions import BUDGET_EXCEEDED, RATE_LIMITED, Denial
from agentstream.admission.exceptions import (
    AdmissionDenied,
    AdmissionError,
    AdmissionStoreUnavailable,
)
from agentstream.admission.keys import AdmissionKeys
from agentstream.admission.rate_limit import SlidingWindowLimiter, Verdict
from agentstream.admission.usage import TenantUsage

__all__ = [
    "BUDGET_EXCEEDED",
    "RATE_LIMITED",
    "Admission",
    "AdmissionDenied",
    "AdmissionError",
    "AdmissionKeys",
    "AdmissionStoreUnavailable",
    "CachedAnswer",
    "Denial",
    "ResponseCache",
    "SlidingWindowLimiter",
    "TenantUsage",
    "TokenGrant",
    "Verdict",
    "admitted_llm_call",
]
