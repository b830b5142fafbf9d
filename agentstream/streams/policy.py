"""The failure policy: one place decides how a failed event ends, from the error's class.

=============================================  ==========================================
error                                          what happens
=============================================  ==========================================
``DeadLetter`` signal (undecodable, poison)    dead letter (+ ErrorEvent), never retried
``RetryLater`` signal (model down, breaker)    next retry tier; past the last one, dead letter
transient error (``retriable``, Redis down,    retried in place (``max_attempts``, jittered
connection / timeout errors), attempt < max    exponential backoff from ``backoff_base_s``)
transient error, attempts used up              next retry tier if the stage has tiers, else DLQ
any other error, attempt < max                 retried in place
any other error, attempts used up              dead letter ``INTERNAL_ERROR`` (or its code)
=============================================  ==========================================

The request-level outcomes a handler chooses itself (an ERROR response for a refused request,
a model error that another attempt would not fix) ask :func:`transient` too, so "is it worth
trying again" is answered in one place. Settings: ``AGENTSTREAM_FAILURE__MAX_ATTEMPTS``,
``AGENTSTREAM_FAILURE__BACKOFF_BASE_S``; the tiers are ``topics.retry_tiers_s``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from agentstream.exceptions import AgentStreamError, ErrorCode
from agentstream.processors.signals import DeadLetter, RetryLater

INTERNAL_ERROR = ErrorCode.INTERNAL_ERROR
# Errors of libraries that say "try again" without an AgentStreamError class (redis-py, aiokafka)
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
        # Redis Cluster / replica trouble during a failover
        "MaxConnectionsError",
        "ClusterDownError",
        "MasterDownError",
        "TryAgainError",
        "ReadOnlyError",
    }
)


class Action(StrEnum):
    RETRY_IN_PLACE = "retry_in_place"
    RETRY_LATER = "retry_later"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, kw_only=True)
class Decision:
    action: Action
    code: str
    retriable: bool
    """Whether the failure is worth another try (the ErrorEvent's ``retriable``)."""
    delay_s: float = 0.0
    """How long to wait before retrying in place."""


def transient(error: BaseException) -> bool:
    """Worth another try later: the error says so, or it is a connection/timeout problem."""
    if isinstance(error, RetryLater):
        return True
    if isinstance(error, AgentStreamError):
        return error.retriable
    if isinstance(error, ConnectionError | TimeoutError | OSError):
        return True
    return type(error).__name__ in _TRANSIENT_NAMES


def error_code(error: BaseException) -> str:
    if isinstance(error, DeadLetter | RetryLater | AgentStreamError):
        return error.code
    return INTERNAL_ERROR


@dataclass(frozen=True, kw_only=True)
class FailurePolicy:
    max_attempts: int = 3
    """Handler attempts in place for an unexpected error (1 = no retry in place)."""
    backoff_base_s: float = 0.1
    retry_tiers: bool = False
    """The stage has retry topics (else retry-later failures are dead-lettered)."""

    def decide(self, error: BaseException, attempt: int) -> Decision:
        """How the ``attempt``-th failed handling (1-based) of an event ends."""
        code = error_code(error)
        retriable = transient(error)
        if isinstance(error, DeadLetter):
            return Decision(action=Action.DEAD_LETTER, code=code, retriable=False)
        later = Action.RETRY_LATER if self.retry_tiers else Action.DEAD_LETTER
        if isinstance(error, RetryLater):
            return Decision(action=later, code=code, retriable=True)
        if attempt < self.max_attempts:
            delay = random.uniform(0, self.backoff_base_s * 2 ** (attempt - 1))
            return Decision(
                action=Action.RETRY_IN_PLACE, code=code, retriable=retriable, delay_s=delay
            )
        action = later if retriable else Action.DEAD_LETTER
        return Decision(action=action, code=code, retriable=retriable)
