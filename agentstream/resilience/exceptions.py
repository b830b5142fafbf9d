"""Errors raised by the resilience primitives (retry policy, circuit breaker, deadlines).

::

    ResilienceError              RESILIENCE_ERROR
    ├── CircuitOpenError         CIRCUIT_OPEN         retriable, retry_after_s (until half-open)
    ├── AttemptTimeoutError      TIMEOUT              retriable (one attempt ran out of time)
    └── DeadlineExceededError    TIMEOUT              not retriable (the request's deadline passed)

``CircuitOpenError`` is retriable in the sense "later may work" (a retry topic may take it), but the
in-process retry policy never waits for it: the caller moves to a fallback model or a retry topic.
"""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError


class ResilienceError(AgentStreamError):
    code = "RESILIENCE_ERROR"


class CircuitOpenError(ResilienceError):
    """The breaker for ``key`` is open (or half-open with every probe slot taken)."""

    code = "CIRCUIT_OPEN"
    retriable = True

    def __init__(self, key: str, *, state: str, retry_after_s: float) -> None:
        super().__init__(f"circuit {key!r} is {state}; retry in {retry_after_s:.2f}s")
        self.key = key
        self.state = state
        self.retry_after_s = retry_after_s


class AttemptTimeoutError(ResilienceError):
    """One attempt took longer than the policy's per-attempt timeout."""

    code = "TIMEOUT"
    retriable = True


class DeadlineExceededError(ResilienceError):
    """The request's deadline passed (or would pass before the next attempt): stop retrying."""

    code = "TIMEOUT"
    retriable = False
