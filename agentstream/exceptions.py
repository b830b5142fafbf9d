"""The root of every agentstream error.

::

    AgentStreamError
    ├── ConfigError                      (agentstream.exceptions)
    ├── SerializationError               (agentstream.schemas.exceptions)
    │   ├── SchemaNotFoundError
    │   └── SchemaRegistryError          retriable = True
    ├── EmbeddedStackError               (agentstream.embedded)
    ├── StateError                       (agentstream.state.exceptions)
    │   ├── ContextLostError
    │   └── ConcurrentUpdateError
    ├── LLMError                         (agentstream.llm.exceptions)
    │   ├── LLMTimeoutError                          retriable, counts_for_breaker
    │   ├── LLMUnavailableError                      retriable, counts_for_breaker
    │   │   └── LLMRateLimitedError (retry_after_s) / LLMOverloadedError / LLMServerError /
    │   │       LLMConnectionError
    │   ├── LLMInvalidResponseError                  retriable = False (one repair turn)
    │   ├── LLMBadRequestError                       retriable = False
    │   │   └── LLMContextTooLongError / LLMContentPolicyError
    │   └── LLMAuthenticationError / LLMQuotaExceededError   retriable = False
    ├── ResilienceError                  (agentstream.resilience.exceptions)
    │   ├── CircuitOpenError                         retriable = True (retry_after_s, cause)
    │   ├── AttemptTimeoutError          TIMEOUT     retriable, counts_for_breaker
    │   └── DeadlineExceededError        TIMEOUT     retriable = False
    └── ToolError                        (agentstream.tools.exceptions)
        ├── ToolNotFoundError / ToolArgumentsError / ToolDeniedError
        ├── ToolTimeoutError, ToolUnavailableError   retriable, counts_for_breaker
        ├── ToolExecutionError
        └── DuplicateToolError

Each error says whether retrying could help (``retriable``), whether it says the dependency
itself is unhealthy (``counts_for_breaker``: timeouts, connection failures, 5xx, overload, rate
limits; never one answer's malformed content, a bad request or a passed deadline), and carries a
stable ``code`` that ends up in ErrorEvents and ERROR responses. An error whose code is a
consequence of an earlier failure (``CIRCUIT_OPEN``) names that failure's code: see
:func:`cause_code`.
"""

from __future__ import annotations


class AgentStreamError(Exception):
    """Base of all project errors."""

    code: str = "INTERNAL_ERROR"
    retriable: bool = False
    counts_for_breaker: bool = False
    """True when the error says the called dependency is unhealthy (a circuit breaker counts it)."""


class ConfigError(AgentStreamError):
    code = "CONFIG_ERROR"


def cause_code(exc: BaseException) -> str | None:
    """The code of the failure behind ``exc``, when its own code is a consequence (an open
    breaker's ``CIRCUIT_OPEN`` names the failure that opened it): the first ``cause_code``
    attribute on ``exc`` or on its chain of ``raise ... from`` causes."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause_code", None)
        if isinstance(cause, str) and cause:
            return cause
        current = current.__cause__
    return None
