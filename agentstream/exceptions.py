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
    │   ├── LLMTimeoutError                          retriable = True
    │   ├── LLMUnavailableError                      retriable = True
    │   │   └── LLMRateLimitedError (retry_after_s) / LLMOverloadedError / LLMServerError /
    │   │       LLMConnectionError / LLMInvalidResponseError
    │   ├── LLMBadRequestError                       retriable = False
    │   │   └── LLMContextTooLongError / LLMContentPolicyError
    │   └── LLMAuthenticationError / LLMQuotaExceededError   retriable = False
    ├── ResilienceError                  (agentstream.resilience.exceptions)
    │   ├── CircuitOpenError                         retriable = True (retry_after_s)
    │   ├── AttemptTimeoutError          TIMEOUT     retriable = True
    │   └── DeadlineExceededError        TIMEOUT     retriable = False
    └── ToolError                        (agentstream.tools.exceptions)
        ├── ToolNotFoundError / ToolArgumentsError / ToolDeniedError
        ├── ToolTimeoutError, ToolUnavailableError   retriable = True
        ├── ToolExecutionError
        └── DuplicateToolError

Each error says whether retrying could help (``retriable``) and carries a stable ``code`` that
ends up in ErrorEvents and ERROR responses.
"""

from __future__ import annotations


class AgentStreamError(Exception):
    """Base of all project errors."""

    code: str = "INTERNAL_ERROR"
    retriable: bool = False


class ConfigError(AgentStreamError):
    code = "CONFIG_ERROR"
