"""Tool errors, each with a stable ``code`` that ends up in error outcomes and events.

::

    ToolError                 TOOL_ERROR
    ├── ToolNotFoundError     TOOL_NOT_FOUND
    ├── ToolArgumentsError    TOOL_INVALID_ARGUMENTS
    ├── ToolDeniedError       TOOL_ACCESS_DENIED
    ├── ToolTimeoutError      TOOL_TIMEOUT            retriable, counted by breakers
    ├── ToolExecutionError    TOOL_FAILED
    ├── ToolUnavailableError  TOOL_UNAVAILABLE        retriable, counted (server down or lost)
    └── DuplicateToolError    TOOL_DUPLICATE          (a registration error, not a call failure)
"""

from __future__ import annotations

from agentstream.exceptions import AgentStreamError, ErrorCode


class ToolError(AgentStreamError):
    code = ErrorCode.TOOL_ERROR


class ToolNotFoundError(ToolError):
    code = ErrorCode.TOOL_NOT_FOUND


class ToolArgumentsError(ToolError):
    """The arguments do not match the tool's input schema, or are otherwise unusable."""

    code = ErrorCode.TOOL_INVALID_ARGUMENTS


class ToolDeniedError(ToolError):
    """The tool exists but is not allowed for this request."""

    code = ErrorCode.TOOL_ACCESS_DENIED


class ToolTimeoutError(ToolError):
    code = ErrorCode.TOOL_TIMEOUT
    retriable = True
    counts_for_breaker = True


class ToolExecutionError(ToolError):
    code = ErrorCode.TOOL_FAILED


class ToolUnavailableError(ToolError):
    """The tool's server is not connected, or its connection broke during the call."""

    code = ErrorCode.TOOL_UNAVAILABLE
    retriable = True
    counts_for_breaker = True


class DuplicateToolError(ToolError):
    code = ErrorCode.TOOL_DUPLICATE
