"""LLM errors; retry code asks the error (``retriable``) instead of matching types, and circuit
breakers ask it too (``counts_for_breaker``).

::

    LLMError                          LLM_ERROR
    ├── LLMTimeoutError               LLM_TIMEOUT             retriable, counted
    ├── LLMUnavailableError           LLM_UNAVAILABLE         retriable, counted (failure injection)
    │   ├── LLMRateLimitedError       RATE_LIMITED            retriable, counted, retry_after_s
    │   ├── LLMOverloadedError        LLM_OVERLOADED          retriable, counted (HTTP 529)
    │   ├── LLMServerError            LLM_SERVER_ERROR        retriable, counted (HTTP 5xx)
    │   └── LLMConnectionError        LLM_CONNECTION_ERROR    retriable, counted (refused, DNS)
    ├── LLMInvalidResponseError       LLM_INVALID_RESPONSE    not retriable, not counted
    ├── LLMBadRequestError            LLM_BAD_REQUEST         not retriable
    │   ├── LLMContextTooLongError    LLM_CONTEXT_TOO_LONG    -> simplified-context strategy
    │   └── LLMContentPolicyError     LLM_CONTENT_POLICY
    ├── LLMAuthenticationError        LLM_AUTHENTICATION      not retriable (401/403)
    └── LLMQuotaExceededError         LLM_QUOTA_EXCEEDED      not retriable (billing quota)

"Counted" (``counts_for_breaker``) errors say the provider is unhealthy: the shared circuit
breaker counts them. A malformed answer (body not JSON, missing fields, tool-call arguments that
are not a JSON object) is that one request's error: a model can be led into one by a single
user's prompt, so it neither counts against the breaker nor is retried as if transient; the
generation stage gives the model one repair turn instead. HTTP 429 is counted: a provider's rate
limit is shared by every user of the API key, and backing off all callers is what it asks for.

Messages name the provider, HTTP status and the provider's error type/code, never the prompt.
The provider's own error text is kept on ``provider_message`` (not in ``str(exc)``), because
some servers echo request content in it.
"""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ErrorCode


class LLMError(AgentStreamError):
    code = ErrorCode.LLM_ERROR

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retry_after_s: float | None = None,
        provider_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status_code = status_code
        self.retry_after_s = retry_after_s
        self.provider_message = provider_message


class LLMTimeoutError(LLMError):
    code = ErrorCode.LLM_TIMEOUT
    retriable = True
    counts_for_breaker = True


class LLMUnavailableError(LLMError):
    """Server error, overload or connection failure (also used by failure injection)."""

    code = ErrorCode.LLM_UNAVAILABLE
    retriable = True
    counts_for_breaker = True


class LLMRateLimitedError(LLMUnavailableError):
    """HTTP 429. ``retry_after_s`` comes from ``retry-after-ms`` / ``Retry-After`` if sent."""

    code = ErrorCode.RATE_LIMITED


class LLMOverloadedError(LLMUnavailableError):
    code = ErrorCode.LLM_OVERLOADED


class LLMServerError(LLMUnavailableError):
    code = ErrorCode.LLM_SERVER_ERROR


class LLMConnectionError(LLMUnavailableError):
    code = ErrorCode.LLM_CONNECTION_ERROR


class LLMInvalidResponseError(LLMError):
    """The provider answered with something that is not the documented shape (bad JSON,
    missing fields, tool-call arguments that are not a JSON object): this request's error, not
    a sign of an unhealthy provider (see the module docstring)."""

    code = ErrorCode.LLM_INVALID_RESPONSE
    retriable = False
    counts_for_breaker = False


class LLMBadRequestError(LLMError):
    code = ErrorCode.LLM_BAD_REQUEST
    retriable = False


class LLMContextTooLongError(LLMBadRequestError):
    """The prompt does not fit the model's context window: retry with a shorter context."""

    code = ErrorCode.LLM_CONTEXT_TOO_LONG


class LLMContentPolicyError(LLMBadRequestError):
    """The provider refused the request or its output on content-policy grounds."""

    code = ErrorCode.LLM_CONTENT_POLICY


class LLMAuthenticationError(LLMError):
    code = ErrorCode.LLM_AUTHENTICATION
    retriable = False


class LLMQuotaExceededError(LLMError):
    """The account's quota or spend limit is used up: waiting seconds will not help."""

    code = ErrorCode.LLM_QUOTA_EXCEEDED
    retriable = False
