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

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every stable error code: ErrorEvent ``code``/``cause``, an ERROR response's
    ``error_code``, the ``agentstream-error-code`` dead-letter header. A str, so it compares
    and serializes as its value; docs/architecture.md's failure tables say what each means."""

    ADMISSION_ERROR = "ADMISSION_ERROR"
    ADMISSION_STORE_UNAVAILABLE = "ADMISSION_STORE_UNAVAILABLE"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    CANCELLED = "CANCELLED"
    CANCEL_TOO_LATE = "CANCEL_TOO_LATE"
    CANCEL_UNKNOWN_REQUEST = "CANCEL_UNKNOWN_REQUEST"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"
    CONCURRENT_UPDATE = "CONCURRENT_UPDATE"
    CONFIG_ERROR = "CONFIG_ERROR"
    CONTEXT_LOST = "CONTEXT_LOST"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    DUPLICATE_REQUEST = "DUPLICATE_REQUEST"
    EMBEDDED_STACK_ERROR = "EMBEDDED_STACK_ERROR"
    EMPTY_MESSAGE = "EMPTY_MESSAGE"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    INVALID_OUTPUT = "INVALID_OUTPUT"
    INVALID_REQUEST = "INVALID_REQUEST"
    KAFKA_UNAVAILABLE = "KAFKA_UNAVAILABLE"
    LLM_AUTHENTICATION = "LLM_AUTHENTICATION"
    LLM_BAD_REQUEST = "LLM_BAD_REQUEST"
    LLM_CONNECTION_ERROR = "LLM_CONNECTION_ERROR"
    LLM_CONTENT_POLICY = "LLM_CONTENT_POLICY"
    LLM_CONTEXT_TOO_LONG = "LLM_CONTEXT_TOO_LONG"
    LLM_ERROR = "LLM_ERROR"
    LLM_INVALID_RESPONSE = "LLM_INVALID_RESPONSE"
    LLM_OVERLOADED = "LLM_OVERLOADED"
    LLM_QUOTA_EXCEEDED = "LLM_QUOTA_EXCEEDED"
    LLM_SERVER_ERROR = "LLM_SERVER_ERROR"
    LLM_TIMEOUT = "LLM_TIMEOUT"
    LLM_UNAVAILABLE = "LLM_UNAVAILABLE"
    MAX_TURNS_EXCEEDED = "MAX_TURNS_EXCEEDED"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"
    PUBLISH_REFUSED = "PUBLISH_REFUSED"
    RATE_LIMITED = "RATE_LIMITED"
    REPLAY_ERROR = "REPLAY_ERROR"
    RESILIENCE_ERROR = "RESILIENCE_ERROR"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    SCHEMA_NOT_FOUND = "SCHEMA_NOT_FOUND"
    SCHEMA_REGISTRY_ERROR = "SCHEMA_REGISTRY_ERROR"
    SERIALIZATION_ERROR = "SERIALIZATION_ERROR"
    SERVICE_DEGRADED = "SERVICE_DEGRADED"
    SESSION_BUSY = "SESSION_BUSY"
    SESSION_FORBIDDEN = "SESSION_FORBIDDEN"
    STARTUP_CHECK_FAILED = "STARTUP_CHECK_FAILED"
    STATE_ERROR = "STATE_ERROR"
    TIMEOUT = "TIMEOUT"
    TOOLS_DISABLED = "TOOLS_DISABLED"
    TOOL_ACCESS_DENIED = "TOOL_ACCESS_DENIED"
    TOOL_APPROVAL_DENIED = "TOOL_APPROVAL_DENIED"
    TOOL_DUPLICATE = "TOOL_DUPLICATE"
    TOOL_ERROR = "TOOL_ERROR"
    TOOL_FAILED = "TOOL_FAILED"
    TOOL_INVALID_ARGUMENTS = "TOOL_INVALID_ARGUMENTS"
    TOOL_NOT_FOUND = "TOOL_NOT_FOUND"
    TOOL_OUTCOME_UNKNOWN = "TOOL_OUTCOME_UNKNOWN"
    TOOL_TIMEOUT = "TOOL_TIMEOUT"
    TOOL_UNAVAILABLE = "TOOL_UNAVAILABLE"
    TOO_MANY_TOOL_CALLS = "TOO_MANY_TOOL_CALLS"
    TOPIC_ADMIN_ERROR = "TOPIC_ADMIN_ERROR"
    UNDECODABLE = "UNDECODABLE"
    UNKNOWN_AGENT = "UNKNOWN_AGENT"
    UNKNOWN_TOOL = "UNKNOWN_TOOL"


class AgentStreamError(Exception):
    """Base of all project errors."""

    code: str = ErrorCode.INTERNAL_ERROR
    retriable: bool = False
    counts_for_breaker: bool = False
    """True when the error says the called dependency is unhealthy (a circuit breaker counts it)."""


class ControlSignal(Exception):
    """Base of the control-flow signals a stage raises to steer the runner
    (``processors/signals.py``: dead-letter this record, retry it later). Not a failure: what
    failed is the signal's ``__cause__``, and that is what a dead letter names."""


class ConfigError(AgentStreamError):
    code = ErrorCode.CONFIG_ERROR


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
