"""Resilience primitives: retries with full jitter, request deadlines, shared circuit breakers."""

from agentstream.resilience.breaker import (
    BreakerConfig,
    BreakerRegistry,
    BreakerSnapshot,
    CircuitBreaker,
    Permit,
    counts_as_failure,
)
from agentstream.resilience.deadline import current_deadline, deadline_scope, remaining_s
from agentstream.resilience.exceptions import (
    AttemptTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
    ResilienceError,
)
from agentstream.resilience.retry import NO_RETRY, RetryPolicy, retry_call

__all__ = [
    "NO_RETRY",
    "AttemptTimeoutError",
    "BreakerConfig",
    "BreakerRegistry",
    "BreakerSnapshot",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeadlineExceededError",
    "Permit",
    "ResilienceError",
    "RetryPolicy",
    "counts_as_failure",
    "current_deadline",
    "deadline_scope",
    "remaining_s",
    "retry_call",
]
