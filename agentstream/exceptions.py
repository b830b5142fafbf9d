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
    │   ├── LLMTimeoutError / LLMUnavailableError   retriable = True
    │   └── LLMBadRequestError                       retriable = False
    └── ToolError                        (agentstream.tools.exceptions)
        ├── ToolNotFoundError / ToolArgumentsError / ToolDeniedError
        ├── ToolTimeoutError                         retriable = True
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
