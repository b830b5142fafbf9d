"""Prometheus counters of admission decisions, store outages and response-cache use.

``agentstream_admission_store_unavailable_total`` is the warning metric: every admission check
that could not reach Redis, labelled by the check and the policy applied (``allow`` = failed open,
``deny`` = failed closed, ``skipped`` = usage not recorded). Alert on any increase.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DECISIONS = Counter(
    "agentstream_admission_decisions",
    "Admission decisions by check (requests, tokens) and outcome.",
    ["check", "outcome"],
)
STORE_UNAVAILABLE = Counter(
    "agentstream_admission_store_unavailable",
    "Admission checks that could not reach Redis, by check and the policy applied.",
    ["check", "policy"],
)
CACHE = Counter(
    "agentstream_response_cache",
    "Response-cache lookups and stores by result (hit, miss, bypass, stored, error).",
    ["result"],
)
BUDGET_USED = Gauge(
    "agentstream_admission_budget_used_ratio",
    "Highest share of its daily budget (tokens, cost) any tenant has used today; read by each "
    "worker every health.lag_interval_s when budgets are configured.",
    ["budget"],
)


def store_unavailable(check: str, policy: str) -> None:
    STORE_UNAVAILABLE.labels(check=check, policy=policy).inc()
