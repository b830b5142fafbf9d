"""Retries with exponential backoff and full jitter, bounded by attempts, total time and deadline.

The policy asks the error: only :class:`~agentstream.exceptions.AgentStreamError` subclasses with
``retriable = True`` are retried; anything else propagates at once. The exception is
:class:`CircuitOpenError`: retriable (later may work) but never waited for here, so the caller can
move to a fallback model or a retry topic at once. The wait before retry ``n`` (1-based) is drawn
uniformly from ``[0, min(max_delay_s, base_delay_s * 2 ** (n - 1))]`` ("full jitter", so a crowd
of workers that failed together does not retry together). When the error carries
``retry_after_s`` (HTTP ``Retry-After``), the wait is at least that.

Retrying stops, re-raising the last error unchanged (its class still says whether a retry topic or
fallback may help), when ``max_attempts`` are used up or the next wait would end more than
``max_total_s`` after the first attempt started. Past the request deadline (argument, else the
:mod:`~agentstream.resilience.deadline` scope) it raises :class:`DeadlineExceededError` (code
``TIMEOUT``): when the deadline has passed, when the next wait would cross it, and when an attempt
is cut short by it. Each attempt runs under ``min(attempt_timeout_s, time to deadline)``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from agentstream.exceptions import AgentStreamError, ConfigError
from agentstream.observability.logging import get_logger
from agentstream.resilience.deadline import current_deadline
from agentstream.resilience.exceptions import (
    AttemptTimeoutError,
    CircuitOpenError,
    DeadlineExceededError,
)

T = TypeVar("T")
log = get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how long to retry. ``max_attempts`` counts the first call."""

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 10.0
    max_total_s: float = 60.0
    attempt_timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError("retry max_attempts must be >= 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_total_s < 0:
            raise ConfigError("retry delays and max_total_s must be >= 0")
        if self.attempt_timeout_s is not None and self.attempt_timeout_s <= 0:
            raise ConfigError("retry attempt_timeout_s must be > 0")

    def backoff_cap_s(self, retry_number: int) -> float:
        """The upper bound of the jittered wait before retry ``retry_number`` (1-based)."""
        exponent = min(max(retry_number - 1, 0), 62)
        return float(min(self.max_delay_s, self.base_delay_s * (2**exponent)))

    def backoff_s(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Full jitter: uniform in ``[0, backoff_cap_s(retry_number)]``."""
        return (rng or random).uniform(0.0, self.backoff_cap_s(retry_number))


NO_RETRY = RetryPolicy(max_attempts=1)


def _attempt_timeout(seconds: float) -> Exception:
    return AttemptTimeoutError(f"attempt timed out after {seconds:.3g}s")


async def retry_call(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    timeout_error: Callable[[float], Exception] = _attempt_timeout,
    operation: str = "call",
    rng: random.Random | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``fn()`` under ``policy``; see the module docstring for when it stops.

    ``deadline`` is epoch seconds (default: the current deadline scope). ``timeout_error`` builds
    the (retriable) error for an attempt that hit ``attempt_timeout_s``. ``operation`` labels log
    lines (log lines carry codes and delays, never arguments). ``rng``, ``sleep`` and ``clock``
    exist for deterministic tests.
    """
    deadline_epoch = current_deadline() if deadline is None else deadline
    start = clock()
    deadline_at = None if deadline_epoch is None else start + (deadline_epoch - time.time())
    attempt = 0
    while True:
        attempt += 1
        outcome = await _attempt(
            fn, policy, deadline_at, clock(), attempt, operation, timeout_error
        )
        if isinstance(outcome, _Done):
            return outcome.value
        error = outcome
        if not getattr(error, "retriable", False) or isinstance(error, CircuitOpenError):
            raise error
        now = clock()
        delay = _delay_before_retry(
            error,
            policy,
            attempt,
            rng,
            now - start,
            None if deadline_at is None else deadline_at - now,
            operation,
        )
        code = getattr(error, "code", type(error).__name__)
        log.info(
            "retrying", operation=operation, attempt=attempt, code=code, delay_s=round(delay, 3)
        )
        await sleep(delay)


@dataclass(frozen=True)
class _Done(Generic[T]):
    value: T


async def _attempt(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    deadline_at: float | None,
    now: float,
    attempt: int,
    operation: str,
    timeout_error: Callable[[float], Exception],
) -> _Done[T] | Exception:
    """One attempt within its time limit (the attempt timeout, cut by the request deadline):
    its value, or the retriable-or-not error it ended with. Other errors propagate."""
    if deadline_at is not None and now >= deadline_at:
        raise DeadlineExceededError(
            f"{operation}: request deadline passed before attempt {attempt}"
        )
    limit = policy.attempt_timeout_s
    cut_by_deadline = False
    if deadline_at is not None and (limit is None or deadline_at - now < limit):
        limit, cut_by_deadline = deadline_at - now, True
    try:
        if limit is None:
            return _Done(await fn())
        async with asyncio.timeout(limit) as scope:
            return _Done(await fn())
    except TimeoutError as exc:
        if limit is None or not scope.expired():
            raise
        if cut_by_deadline:
            raise DeadlineExceededError(
                f"{operation}: request deadline passed during attempt {attempt}"
            ) from exc
        error = timeout_error(limit)
        error.__cause__ = exc
        return error
    except AgentStreamError as exc:
        return exc


def _delay_before_retry(
    error: Exception,
    policy: RetryPolicy,
    attempt: int,
    rng: random.Random | None,
    elapsed_s: float,
    left_s: float | None,
    operation: str = "call",
) -> float:
    """The jittered wait before the next attempt (Retry-After honoured); raises ``error`` when
    the attempts or the time budget are used up, DeadlineExceededError when the request's
    deadline (``left_s`` from now) would pass first."""
    if attempt >= policy.max_attempts:
        error.add_note(f"{operation}: gave up after {attempt} attempt(s)")
        raise error
    delay = policy.backoff_s(attempt, rng)
    retry_after = getattr(error, "retry_after_s", None)
    if isinstance(retry_after, int | float) and retry_after > delay:
        delay = float(retry_after)
    if left_s is not None and delay >= left_s:
        raise DeadlineExceededError(
            f"{operation}: the next attempt (in {delay:.2f}s) would pass the request deadline"
        ) from error
    if elapsed_s + delay > policy.max_total_s:
        error.add_note(
            f"{operation}: gave up after {attempt} attempt(s): retry time budget "
            f"of {policy.max_total_s:g}s used up"
        )
        raise error
    return delay
