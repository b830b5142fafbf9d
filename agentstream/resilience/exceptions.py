"""Errors raised by the resilience primitives (retry policy, circuit breaker, deadlines).

::

    ResilienceError              RESILIENCE_ERROR
    ├── CircuitOpenError         CIRCUIT_OPEN         retriable, retry_after_s (until half-open),
    │                                                 cause_code (the failure that opened it)
    ├── AttemptTimeoutError      TIMEOUT              retriable, counted by breakers (one attempt
    │                                                 ran out of time)
    └── DeadlineExceededError    TIMEOUT              not retriable (the request's deadline passed)

``CircuitOpenError`` is retriable in the sense "later may work" (a retry topic may take it), but the
in-process retry policy never waits for it: the caller moves to a fallback model or a retry topic.
"""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ErrorCode


class ResilienceError(AgentStreamError):
    code = ErrorCode.RESILIENCE_ERROR


class CircuitOpenError(ResilienceError):
    """The breaker for ``key`` is open (or half-open with every probe slot taken).

    ``cause_code`` is the code of the last failure the breaker counted (the one that opened it,
    or the failed probe that opened it again), when known: ``CIRCUIT_OPEN`` is a consequence,
    and dead letters and ErrorEvents carry the cause too."""

    code = ErrorCode.CIRCUIT_OPEN
    retriable = True

    def __init__(
        self, key: str, *, state: str, retry_after_s: float, cause_code: str | None = None
    ) -> None:
        after = f" after {cause_code}" if cause_code else ""
        super().__init__(f"circuit {key!r} is {state}{after}; retry in {retry_after_s:.2f}s")
        self.key = key
        self.state = state
        self.retry_after_s = retry_after_s
        self.cause_code = cause_code


class AttemptTimeoutError(ResilienceError):
    """One attempt took longer than the policy's per-attempt timeout."""

    code = ErrorCode.TIMEOUT
    retriable = True
    counts_for_breaker = True


class DeadlineExceededError(ResilienceError):
    """The request's deadline passed (or would pass before the next attempt): stop retrying."""

    code = ErrorCode.TIMEOUT
    retriable = False
